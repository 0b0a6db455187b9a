//! Authorization (issue 18): `once serve --authorization true --super-users User:admin` against real
//! clients — confluent-kafka (Python, tests/python/acl_scenarios.py) and kcat — over SASL_SSL with
//! SCRAM-SHA-512 and PLAIN and over SSL with client certificates (mTLS).
//!
//! - A super user creates, describes (including MATCH filters) and deletes ACLs; others may not.
//! - An allowed principal produces, consumes in a group and runs transactions; a DENY overrides a
//!   prefixed ALLOW; a principal without WRITE gets TOPIC_AUTHORIZATION_FAILED and nothing of its
//!   is stored; without WRITE on a transactional id it cannot init it (which would fence and abort
//!   the owner's open transaction) nor abort it with `once txn abort` (by id, or at a partition with
//!   WriteTxnMarkers) — the owner's transaction commits afterwards; Metadata hides
//!   topics a principal may not describe; a certificate's subject is the principal on mTLS.
//! - ACLs survive a SIGKILL; deleting them takes rights away at once.
//! - With authorization off the ACL requests answer SECURITY_DISABLED.

mod support;

use std::process::{Command, Output};

use support::security::{certificates, kcat};
use support::{free_port, once, BrokerProcess};

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn python(args: &[&str]) -> Output {
    python_with(args, &[])
}

fn python_with(args: &[&str], environment: &[(&str, &str)]) -> Output {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/acl_scenarios.py");
    Command::new("python3")
        .arg(script)
        .args(args)
        .envs(environment.iter().copied())
        // cargo's LD_LIBRARY_PATH points at the build's librdkafka; the wheel brings its own.
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("run python3 (.ci/run installs confluent-kafka)")
}

fn scram(user: &str, ca: &str) -> Vec<String> {
    vec![
        "security.protocol=SASL_SSL".into(),
        "sasl.mechanisms=SCRAM-SHA-512".into(),
        format!("sasl.username={user}"),
        format!("sasl.password={user}-secret"),
        format!("ssl.ca.location={ca}"),
    ]
}

#[test]
fn acls_decide_what_real_clients_may_do() {
    let certs = tempfile::tempdir().expect("temp dir");
    let dir = certs.path();
    certificates(dir);
    let path = |name: &str| dir.join(name).display().to_string();
    let (plain, sasl_ssl, ssl) = (free_port(), free_port(), free_port());
    let listeners = [
        format!("PLAINTEXT://127.0.0.1:{plain}"),
        format!("SASL_SSL://127.0.0.1:{sasl_ssl}"),
        format!("SSL://127.0.0.1:{ssl}"),
    ];
    let (cert, key, ca) = (path("broker.pem"), path("broker.key"), path("ca.pem"));
    let mut args = vec!["--tls-cert", &cert, "--tls-key", &key, "--tls-client-ca", &ca];
    for listener in &listeners {
        args.extend(["--listener", listener]);
    }
    args.extend([
        "--scram-user",
        "admin:admin-secret",
        "--scram-user",
        "alice:alice-secret",
        "--scram-user",
        "bob:bob-secret",
        "--authorization",
        "true",
        "--super-users",
        "User:admin",
    ]);
    let mut broker = BrokerProcess::start_with_listeners(&args, plain);
    let (sasl_at, ssl_at) = (format!("127.0.0.1:{sasl_ssl}"), format!("127.0.0.1:{ssl}"));

    let bob_config = dir.join("bob.properties");
    let bob_settings = format!(
        "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\nsasl.username=bob\nsasl.password=bob-secret\nssl.ca.location={ca}\n"
    );
    std::fs::write(&bob_config, bob_settings).expect("bob's settings");
    let scenarios = python_with(
        &[&sasl_at, &ssl_at, &ca, &path("client.pem"), &path("client.key")],
        &[("ONCE_BIN", env!("CARGO_BIN_EXE_once")), ("BOB_CONFIG", &bob_config.display().to_string())],
    );
    assert!(
        scenarios.status.success() && text(&scenarios).contains("ALL CHECKS PASSED"),
        "confluent-kafka scenarios: {}\nbroker log:\n{}",
        text(&scenarios),
        broker.log()
    );
    // Denials are logged with the principal and what was refused.
    assert!(broker.log().contains("authorization denied"), "denials are logged");

    // `once acl` and `once user` with --command-config: the super user may, alice may not.
    let properties = |user: &str| {
        let file = dir.join(format!("{user}.properties"));
        let text = format!(
            "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\nsasl.username={user}\nsasl.password={user}-secret\nssl.ca.location={ca}\n"
        );
        std::fs::write(&file, text).expect("properties");
        file.display().to_string()
    };
    let (admin_config, alice_config) = (properties("admin"), properties("alice"));
    let listed = once(&["acl", "list", "--bootstrap", &sasl_at, "--command-config", &admin_config]);
    assert!(listed.contains("User:alice\tALLOW\tALL\t*\tTOPIC\tPREFIXED\tpayments"), "{listed}");
    let refused = Command::new(env!("CARGO_BIN_EXE_once"))
        .args(["acl", "list", "--bootstrap", &sasl_at, "--command-config", &alice_config])
        .output()
        .expect("run once");
    assert!(
        !refused.status.success() && text(&refused).contains("ClusterAuthorizationFailed"),
        "alice may not list ACLs: {}",
        text(&refused)
    );
    let refused = Command::new(env!("CARGO_BIN_EXE_once"))
        .args(["user", "create", "mallory", "--bootstrap", &sasl_at, "--command-config", &alice_config])
        .env("ONCE_USER_PASSWORD", "mallory-secret")
        .output()
        .expect("run once");
    assert!(
        !refused.status.success() && text(&refused).contains("ClusterAuthorizationFailed"),
        "alice may not create users: {}",
        text(&refused)
    );
    let users = once(&["user", "list", "--bootstrap", &sasl_at, "--command-config", &admin_config]);
    assert!(users.contains("alice") && !users.contains("mallory"), "{users}");

    // kcat (librdkafka, the system's): bob may read payments but not write it; nothing of his stored.
    let before = kcat(&["-C", "-b", &sasl_at, "-t", "payments", "-e", "-q"], &scram("admin", &ca), None);
    assert!(before.status.success(), "{}", text(&before));
    let refused = kcat(&["-P", "-b", &sasl_at, "-t", "payments", "-p", "0"], &scram("bob", &ca), Some("kcat-bob\n"));
    assert!(
        text(&refused).contains("Topic authorization failed") || text(&refused).contains("TOPIC_AUTHORIZATION_FAILED"),
        "bob's kcat produce: {}",
        text(&refused)
    );
    // The scenarios deleted bob's ACLs at their end: now he may not read payments either.
    let bob_reads = kcat(&["-C", "-b", &sasl_at, "-t", "payments", "-e", "-q"], &scram("bob", &ca), None);
    assert!(
        bob_reads.stdout.is_empty() && text(&bob_reads).to_lowercase().contains("authorization failed"),
        "bob reads nothing: {}",
        text(&bob_reads)
    );
    let written =
        kcat(&["-P", "-b", &sasl_at, "-t", "payments", "-p", "0"], &scram("alice", &ca), Some("kcat-alice\n"));
    assert!(written.status.success(), "alice's kcat produce: {}", text(&written));
    let after = kcat(&["-C", "-b", &sasl_at, "-t", "payments", "-e", "-q"], &scram("admin", &ca), None);
    let (before, after) = (String::from_utf8_lossy(&before.stdout), String::from_utf8_lossy(&after.stdout));
    assert_eq!(after, format!("{before}kcat-alice\n"), "alice's record stored, bob's not");

    // ACLs are durable: after SIGKILL alice may still write, bob (whose ACLs were deleted) may not.
    broker.kill9();
    broker.restart();
    let written = kcat(&["-P", "-b", &sasl_at, "-t", "payments", "-p", "0"], &scram("alice", &ca), Some("restarted\n"));
    assert!(written.status.success(), "alice after a restart: {}", text(&written));
    let refused = kcat(&["-P", "-b", &sasl_at, "-t", "public", "-p", "0"], &scram("bob", &ca), Some("no\n"));
    assert!(!refused.status.success() || text(&refused).contains("authorization failed"), "{}", text(&refused));
    let public = kcat(&["-C", "-b", &sasl_at, "-t", "public", "-e", "-q"], &scram("admin", &ca), None);
    assert!(!String::from_utf8_lossy(&public.stdout).contains("no\n"), "bob's record not stored: {}", text(&public));
    // An anonymous client on the PLAINTEXT listener sees no topics at all.
    let anonymous = kcat(&["-L", "-b", &format!("127.0.0.1:{plain}")], &[], None);
    assert!(
        anonymous.status.success() && text(&anonymous).contains("0 topics"),
        "User:ANONYMOUS is shown nothing: {}",
        text(&anonymous)
    );
}

#[test]
fn authorization_off_serves_no_acl_requests() {
    let broker = BrokerProcess::start(&[]);
    let disabled = python(&["--disabled", &broker.bootstrap()]);
    assert!(
        disabled.status.success() && text(&disabled).contains("ALL CHECKS PASSED"),
        "CreateAcls without --authorization: {}",
        text(&disabled)
    );
    assert!(!broker.data_dir().join("acls.json").exists(), "nothing planted");
}

#[test]
fn super_users_are_checked_at_start() {
    let data = tempfile::tempdir().expect("temp dir");
    let data = data.path().display().to_string();
    for (value, complaint) in [("User:*", "everyone"), ("alice", "User:NAME"), ("Group:x", "not a User")] {
        // Under `timeout`: a broker that wrongly accepted the value would serve forever.
        let output = Command::new("timeout")
            .args(["20", env!("CARGO_BIN_EXE_once"), "serve", "--authorization", "true", "--super-users", value])
            .args(["--listen", "127.0.0.1:0", "--data-dir", &data])
            .output()
            .expect("run once");
        assert!(!output.status.success(), "--super-users {value} must be refused");
        assert!(text(&output).contains(complaint), "--super-users {value}: {}", text(&output));
    }
}

/// `once acl add|list|remove` (kafka-acls' option names), as a super user: here User:ANONYMOUS on a
/// loopback PLAINTEXT listener, which the CLI reaches without client settings.
#[test]
fn once_acl_adds_lists_and_removes() {
    let broker = BrokerProcess::start(&["--authorization", "true", "--super-users", "User:ANONYMOUS"]);
    let at = broker.bootstrap();
    let added = once(&[
        "acl",
        "add",
        "--bootstrap",
        &at,
        "--allow-principal",
        "User:alice",
        "--allow-principal",
        "User:bob",
        "--operation",
        "read",
        "--operation",
        "Write",
        "--topic",
        "pay",
        "--resource-pattern-type",
        "prefixed",
    ]);
    assert_eq!(added.lines().count(), 4, "2 principals × 2 operations: {added}");
    once(&[
        "acl",
        "add",
        "--bootstrap",
        &at,
        "--deny-principal",
        "User:bob",
        "--operation",
        "write",
        "--topic",
        "pay.eu",
    ]);
    once(&[
        "acl",
        "add",
        "--bootstrap",
        &at,
        "--allow-principal",
        "User:carol",
        "--operation",
        "IdempotentWrite",
        "--cluster",
    ]);
    let listed = once(&["acl", "list", "--bootstrap", &at]);
    assert_eq!(listed.lines().count(), 1 + 6, "a header and six ACLs: {listed}");
    assert!(listed.contains("User:bob\tDENY\tWRITE\t*\tTOPIC\tLITERAL\tpay.eu"), "{listed}");
    assert!(listed.contains("User:carol\tALLOW\tIDEMPOTENT_WRITE\t*\tCLUSTER\tLITERAL\tkafka-cluster"), "{listed}");
    // MATCH: every ACL that applies to topic pay.eu — the two prefixes per principal and the DENY.
    let applying = once(&["acl", "list", "--bootstrap", &at, "--topic", "pay.eu", "--resource-pattern-type", "match"]);
    assert_eq!(applying.lines().count(), 1 + 5, "{applying}");
    // Invalid ACLs are refused with the broker's reason.
    let output = Command::new(env!("CARGO_BIN_EXE_once"))
        .args(["acl", "add", "--bootstrap", &at, "--allow-principal", "User:a", "--operation", "write", "--group", "g"])
        .output()
        .expect("run once");
    assert!(
        !output.status.success() && text(&output).contains("WRITE is not an operation on a GROUP"),
        "{}",
        text(&output)
    );
    let output = Command::new(env!("CARGO_BIN_EXE_once"))
        .args(["acl", "remove", "--bootstrap", &at])
        .output()
        .expect("run once");
    assert!(!output.status.success() && text(&output).contains("--all"), "remove needs a filter: {}", text(&output));
    let removed = once(&["acl", "remove", "--bootstrap", &at, "--principal", "User:bob"]);
    assert_eq!(removed.lines().count(), 3, "bob's three ACLs: {removed}");
    let listed = once(&["acl", "list", "--bootstrap", &at]);
    assert!(!listed.contains("User:bob") && listed.lines().count() == 1 + 3, "{listed}");
    // A broker without authorization says so.
    let open = BrokerProcess::start(&[]);
    let output = Command::new(env!("CARGO_BIN_EXE_once"))
        .args(["acl", "list", "--bootstrap", &open.bootstrap()])
        .output()
        .expect("run once");
    assert!(!output.status.success() && text(&output).contains("SecurityDisabled"), "{}", text(&output));
}

/// Review findings, fixed: a DENY for an IPv4 host holds for that client on an IPv6 socket
/// (`::ffff:127.0.0.1`); without auto-creation a missing topic is UNKNOWN_TOPIC_OR_PARTITION, not an
/// authorization failure; OffsetFetch of all a group's topics leaves out those the principal may not
/// describe; DescribeCluster needs no permission. ACLs are placed in the data directory's
/// `acls.json` before the broker starts (the file `once acl` changes).
#[test]
fn acl_edges_from_review() {
    let data = tempfile::tempdir().expect("temp dir");
    let data_dir = data.path().join("data");
    let script = |args: &[&str]| {
        Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/acl_edges.py"))
            .args(args)
            .env_remove("LD_LIBRARY_PATH")
            .output()
            .expect("run python3")
    };
    let port = free_port();
    let listener = format!("PLAINTEXT://[::ffff:127.0.0.1]:{port}");
    let at = format!("127.0.0.1:{port}");
    {
        let mut open = BrokerProcess::start_with_listeners_in(&["--listener", &listener], port, Some(data_dir.clone()));
        let committed = script(&["commit", &at]);
        assert!(committed.status.success(), "{}", text(&committed));
        assert!(open.terminate(), "clean stop");
    }
    let acl = |resource_type: &str, name: &str, operation: &str, permission: &str, host: &str| {
        format!(
            r#"{{"resource_type":"{resource_type}","resource_name":"{name}","pattern_type":"LITERAL","principal":"User:ANONYMOUS","host":"{host}","operation":"{operation}","permission":"{permission}"}}"#
        )
    };
    let acls = [
        acl("TOPIC", "*", "ALL", "ALLOW", "*"),
        acl("GROUP", "g1", "READ", "ALLOW", "*"),
        acl("TOPIC", "hidden", "ALL", "DENY", "127.0.0.1"),
    ];
    std::fs::write(data_dir.join("acls.json"), format!(r#"{{"format":1,"acls":[{}]}}"#, acls.join(","))).expect("acls");
    let args = ["--listener", &listener, "--authorization", "true", "--auto-create-topics", "false"];
    let broker = BrokerProcess::start_with_listeners_in(&args, port, Some(data_dir));
    let checked = script(&["check", &at]);
    assert!(
        checked.status.success() && text(&checked).contains("ALL CHECKS PASSED"),
        "{}\nbroker log:\n{}",
        text(&checked),
        broker.log()
    );
}
