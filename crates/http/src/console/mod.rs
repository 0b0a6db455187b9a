//! The web console (`GET /`, docs/design/console.md): three embedded assets and the JSON endpoints
//! they read. Translation only, like the rest of the edge: the node's registries, coordinators and
//! partitions are read as they are, nothing is kept here.
//!
//! - [`views`]: overview, topics, consumer groups, transactions and the one action (abort).
//! - [`records`]: the record browser, batches decoded into JSON records.
//!
//! Access: the same caller and ACLs as every HTTP request. Lists leave out what the caller may not
//! DESCRIBE (as Kafka's Metadata hides topics); the cluster-wide views need DESCRIBE on the
//! cluster; reading records needs READ on the topic. An anonymous caller refused is answered 401
//! with a Basic challenge, so a browser asks for a login instead of showing a dead end.

pub mod records;
pub mod views;

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use axum::extract::{Extension, Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use once_acl::{Operation, Principal, ResourceType, CLUSTER_NAME};

use crate::auth::Caller;
use crate::problem::Problem;
use crate::HttpState;

const INDEX_HTML: &str = include_str!("../../console/index.html");
const APP_JS: &str = include_str!("../../console/app.js");
const STYLE_CSS: &str = include_str!("../../console/style.css");

/// The console's pages load only what this origin serves: no inline script, no other site.
const CONSOLE_CSP: &str = "default-src 'self'; img-src 'self' data:; frame-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// A `once check` report is self-contained and runs no script: sandboxed, it can do nothing.
const REPORT_CSP: &str = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:";

/// The console's routes, merged into the edge's router.
pub fn routes() -> Router<Arc<HttpState>> {
    Router::new()
        .route("/", get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }))
        .route("/console/app.js", get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }))
        .route("/console/style.css", get(|| async { asset(STYLE_CSS, "text/css; charset=utf-8") }))
        // No icon: answered empty, so a browser's automatic request is not an error.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/console/login", get(login))
        .route("/console/api/overview", get(views::overview))
        .route("/console/api/topics", get(views::topics))
        .route("/console/api/topics/{topic}", get(views::topic))
        .route("/console/api/topics/{topic}/partitions/{partition}/records", get(records::handle))
        .route("/console/api/groups", get(views::groups))
        .route("/console/api/transactions", get(views::transactions))
        .route("/console/api/transactions/{transactional_id}/abort", post(views::abort))
        .route("/console/api/rates", get(views::rates))
        .route("/console/api/reports", get(reports))
        .route("/console/reports/{name}", get(report))
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONSOLE_CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// A JSON answer that is never cached (the console polls these).
pub(crate) fn json(value: serde_json::Value) -> Response {
    let mut response = axum::Json(value).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// [`Caller::require`], but a refused anonymous caller gets 401 with the Basic challenge: the
/// browser then asks for a login.
pub(crate) fn require(
    caller: &Caller,
    state: &HttpState,
    operation: Operation,
    resource_type: ResourceType,
    name: &str,
) -> Result<(), Problem> {
    caller.require(state, operation, resource_type, name).map_err(|problem| {
        if caller.session.principal == Principal::anonymous() && caller.may_log_in {
            Problem::new(
                StatusCode::UNAUTHORIZED,
                "authentication-required",
                "Authentication required",
                format!("{} Log in with a user allowed to see it.", problem.detail),
            )
            .challenge()
        } else {
            problem
        }
    })
}

/// The console's "Log in": anonymous callers may read whatever the ACLs let `User:ANONYMOUS` read,
/// so no read ever challenges and a browser would never send a password. This path does: 401 with
/// the Basic challenge while anonymous, the caller once logged in. A browser then sends the
/// credentials with every request under `/console/`.
async fn login(Extension(caller): Extension<Caller>) -> Response {
    if caller.session.principal == Principal::anonymous() && !caller.may_log_in {
        return Problem::new(
            StatusCode::FORBIDDEN,
            "login-unavailable",
            "Logging in is not possible here",
            "the broker has no users (--scram-user, once user create), or this is plain HTTP from another host, \
             where a password would cross the network in clear: use the broker's https:// listener",
        )
        .into_response();
    }
    if caller.session.principal == Principal::anonymous() {
        return Problem::new(
            StatusCode::UNAUTHORIZED,
            "authentication-required",
            "Authentication required",
            "log in with a user of the broker (Basic credentials; over https from another host)",
        )
        .challenge()
        .into_response();
    }
    json(serde_json::json!({"caller": caller.session.principal.to_string()}))
}

/// The HTML reports in `--console-reports DIR`, newest first.
async fn reports(State(state): State<Arc<HttpState>>, Extension(caller): Extension<Caller>) -> Response {
    if let Err(problem) = require(&caller, &state, Operation::Describe, ResourceType::Cluster, CLUSTER_NAME) {
        return problem.into_response();
    }
    let directory = state.console_reports.clone();
    let listed = tokio::task::spawn_blocking(move || directory.as_deref().map(list_reports)).await;
    match listed {
        Ok(None) => json(serde_json::json!({"directory": null, "reports": []})),
        Ok(Some(Ok(reports))) => json(serde_json::json!({
            "directory": state.console_reports.as_ref().map(|dir| dir.display().to_string()),
            "reports": reports,
        })),
        Ok(Some(Err(error))) => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "reports-unreadable",
            "The reports directory cannot be read",
            error,
        )
        .into_response(),
        Err(error) => Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "reports", "Listing failed", error.to_string())
            .into_response(),
    }
}

/// A name the reports directory may serve: a plain file name ending in `.html`, no path.
pub fn is_report_name(name: &str) -> bool {
    name.len() > ".html".len()
        && name.len() <= 255
        && name.ends_with(".html")
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

pub(crate) fn list_reports(directory: &FsPath) -> Result<Vec<serde_json::Value>, String> {
    let entries = std::fs::read_dir(directory).map_err(|error| format!("{}: {error}", directory.display()))?;
    let mut reports: Vec<(i64, String, u64)> = Vec::new();
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
        let Ok(metadata) = entry.metadata() else { continue };
        if !is_report_name(&name) || !metadata.is_file() {
            continue;
        }
        let modified_ms = metadata
            .modified()
            .ok()
            .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |elapsed| elapsed.as_millis() as i64);
        reports.push((modified_ms, name, metadata.len()));
    }
    reports.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    Ok(reports
        .into_iter()
        .map(|(modified_ms, name, bytes)| serde_json::json!({"name": name, "bytes": bytes, "modified_ms": modified_ms}))
        .collect())
}

/// One report, sandboxed.
async fn report(
    State(state): State<Arc<HttpState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Response {
    if let Err(problem) = require(&caller, &state, Operation::Describe, ResourceType::Cluster, CLUSTER_NAME) {
        return problem.into_response();
    }
    let Some(directory) = state.console_reports.clone() else {
        return Problem::not_found("no reports directory (once serve --console-reports DIR)").into_response();
    };
    if !is_report_name(&name) {
        return Problem::not_found(format!("'{name}' is not a report name (NAME.html)")).into_response();
    }
    let path: PathBuf = directory.join(&name);
    match tokio::task::spawn_blocking(move || read_report(&path)).await {
        Ok(Ok(body)) => {
            let mut response = body.into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
            headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(REPORT_CSP));
            headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
            response
        }
        Ok(Err(ReportError::NotFound)) => Problem::not_found(format!("no report '{name}'")).into_response(),
        Ok(Err(ReportError::Refused(why))) => {
            Problem::new(StatusCode::FORBIDDEN, "report-refused", "The report is not served", why).into_response()
        }
        Ok(Err(ReportError::Io(error))) => {
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "report-unreadable", "The report cannot be read", error)
                .into_response()
        }
        Err(error) => Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "report", "Reading failed", error.to_string())
            .into_response(),
    }
}

/// The most bytes of one report served (a 150-second run's page is about 130 KB).
pub const REPORT_BYTES_MAX: u64 = 16 * 1024 * 1024;

#[derive(Debug)]
enum ReportError {
    NotFound,
    Refused(String),
    Io(String),
}

/// A report's bytes: a regular file directly in the directory, not a symbolic link (which could
/// point anywhere the broker can read), at most [`REPORT_BYTES_MAX`]. Opened without following
/// links and checked on the open file, so nothing can be swapped in between.
fn read_report(path: &FsPath) -> Result<Vec<u8>, ReportError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file =
        std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path).map_err(
            |error| match error.kind() {
                std::io::ErrorKind::NotFound => ReportError::NotFound,
                // ELOOP: the name is a symbolic link.
                _ if error.raw_os_error() == Some(libc::ELOOP) => {
                    ReportError::Refused("a symbolic link is not served".into())
                }
                _ => ReportError::Io(format!("{}: {error}", path.display())),
            },
        )?;
    let metadata = file.metadata().map_err(|error| ReportError::Io(error.to_string()))?;
    if !metadata.is_file() {
        return Err(ReportError::Refused("not a regular file".into()));
    }
    if metadata.len() > REPORT_BYTES_MAX {
        return Err(ReportError::Refused(format!("{} bytes, more than the {REPORT_BYTES_MAX} served", metadata.len())));
    }
    let mut body = Vec::with_capacity(metadata.len() as usize);
    file.take(REPORT_BYTES_MAX).read_to_end(&mut body).map_err(|error| ReportError::Io(error.to_string()))?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_html_names_are_reports() {
        for good in ["run.html", "txn-2026-12-05_10.30.html", "a.html"] {
            assert!(is_report_name(good), "{good}");
        }
        for bad in ["../x.html", "x/y.html", ".hidden.html", "run.htm", ".html", "run.html\0", "r%2e.html", "a b.html"]
        {
            assert!(!is_report_name(bad), "{bad}");
        }
    }

    #[test]
    fn reports_are_listed_newest_first_and_others_ignored() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("old.html"), "<p>old</p>").expect("write");
        std::fs::write(dir.path().join("notes.txt"), "no").expect("write");
        std::fs::create_dir(dir.path().join("dir.html")).expect("mkdir");
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(dir.path().join("old.html"))
            .and_then(|file| file.set_modified(old))
            .expect("age the file");
        std::fs::write(dir.path().join("new.html"), "<p>new report</p>").expect("write");
        let listed = list_reports(dir.path()).expect("listed");
        let names: Vec<&str> = listed.iter().map(|report| report["name"].as_str().expect("name")).collect();
        assert_eq!(names, ["new.html", "old.html"]);
        assert_eq!(listed[0]["bytes"], 17);
        assert!(list_reports(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn only_regular_files_are_read_never_through_a_link() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("secret.txt"), "key material").expect("write");
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), dir.path().join("link.html")).expect("symlink");
        std::fs::create_dir(dir.path().join("dir.html")).expect("mkdir");
        std::fs::write(dir.path().join("ok.html"), "<p>report</p>").expect("write");
        assert_eq!(read_report(&dir.path().join("ok.html")).expect("read"), b"<p>report</p>");
        assert!(matches!(read_report(&dir.path().join("link.html")), Err(ReportError::Refused(_))));
        assert!(matches!(read_report(&dir.path().join("dir.html")), Err(ReportError::Refused(_))));
        assert!(matches!(read_report(&dir.path().join("none.html")), Err(ReportError::NotFound)));
        let listed = list_reports(dir.path()).expect("listed");
        assert_eq!(listed.len(), 1, "links and directories are not listed: {listed:?}");
    }
}
