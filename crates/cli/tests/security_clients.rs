//! The `once` client commands against secured listeners, with `--command-config` (issue 18: "the
//! CLI's client commands take the usual client settings"), and user management over KIP-554:
//!
//! - SASL_SSL with SCRAM-SHA-512: topic create/list, produce, consume, copy (a transactional copier,
//!   so a group and a transaction exist), group list, txn list and describe (through the
//!   coordinator's connection); a wrong password refused with an error that says authentication;
//!   a setting the admin client does not understand refused by name.
//! - `once user create|list|delete`, then kcat logging in as the new user, and failing after the
//!   delete; confluent-kafka's AdminClient describing and altering users, with Kafka's error codes.
//! - SSL with mTLS (a client certificate required), and a broker certificate for another name:
//!   refused unless `ssl.endpoint.identification.algorithm=none`.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use support::security::{certificates, kcat, text};
use support::{free_port, BrokerProcess};

/// Runs `once` with `args` and `stdin`, and optional extra environment.
fn once(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_once"))
        .args(args)
        .env_remove("ONCE_USER_PASSWORD")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run once");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    child.wait_with_output().expect("once output")
}

/// `once` that must succeed; answers its standard output.
fn once_ok(args: &[&str], stdin: &str) -> String {
    let output = once(args, stdin, &[]);
    assert!(output.status.success(), "once {args:?}: {}", text(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn write_settings(dir: &Path, name: &str, lines: &[String]) -> String {
    let path: PathBuf = dir.join(name);
    std::fs::write(&path, format!("# client settings for the test\n{}\n", lines.join("\n"))).expect("write settings");
    path.display().to_string()
}

fn scram_settings(dir: &Path, user: &str, password: &str) -> Vec<String> {
    vec![
        "security.protocol=SASL_SSL".into(),
        "sasl.mechanism=SCRAM-SHA-512".into(),
        format!("sasl.username={user}"),
        format!("sasl.password={password}"),
        format!("ssl.ca.location={}", dir.join("ca.pem").display()),
    ]
}

/// A broker with a PLAINTEXT listener and a SASL_SSL one, `admin` created at start.
fn sasl_broker(dir: &Path) -> (BrokerProcess, String) {
    let (plain, sasl) = (free_port(), free_port());
    let listeners = [format!("PLAINTEXT://127.0.0.1:{plain}"), format!("SASL_SSL://127.0.0.1:{sasl}")];
    let (cert, key) = (dir.join("broker.pem").display().to_string(), dir.join("broker.key").display().to_string());
    let args = [
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--scram-user",
        "admin:admin-secret",
        "--listener",
        &listeners[0],
        "--listener",
        &listeners[1],
    ];
    (BrokerProcess::start_with_listeners(&args, plain), format!("127.0.0.1:{sasl}"))
}

#[test]
fn client_commands_over_sasl_ssl_with_scram_sha_512() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path();
    certificates(dir);
    let (_broker, at) = sasl_broker(dir);
    let config = write_settings(dir, "admin.properties", &scram_settings(dir, "admin", "admin-secret"));
    let secured = |args: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
        all.extend(["--bootstrap".into(), at.clone(), "--command-config".into(), config.clone()]);
        all
    };
    let run = |args: &[&str], stdin: &str| -> String {
        let all = secured(args);
        once_ok(&all.iter().map(String::as_str).collect::<Vec<_>>(), stdin)
    };

    assert!(run(&["topic", "create", "secure", "--partitions", "2"], "").contains("created topic secure"));
    assert!(run(&["topic", "list"], "").contains("secure\tpartitions=2"));
    run(&["produce", "secure", "--key-separator", ":"], "k1:a\nk2:b\nk3:c\n");
    let mut consumed: Vec<String> =
        run(&["consume", "secure", "--from-beginning"], "").lines().map(str::to_owned).collect();
    consumed.sort();
    assert_eq!(consumed, ["a", "b", "c"]);

    // A transactional copier: its group commits through the coordinator, its transactional id
    // is listed and described (a second connection, to the coordinator, with the same settings).
    run(&["topic", "create", "copied", "--partitions", "2"], "");
    let copy = [
        "copy",
        "--from",
        "secure",
        "--to",
        "copied",
        "--group",
        "copier",
        "--transactional-id",
        "copier-1",
        "--exit-when-idle-ms",
        "2000",
    ];
    run(&copy, "");
    let mut copied: Vec<String> =
        // --max-messages: the copier's commit markers sit after its last record, past which
        // `once consume` (which stops at the high watermark by record offsets) would wait.
        run(&["consume", "copied", "--from-beginning", "--max-messages", "3"], "").lines().map(str::to_owned).collect();
    copied.sort();
    assert_eq!(copied, ["a", "b", "c"]);
    assert!(run(&["group", "list"], "").contains("copier\t"), "the copier's group is listed");
    assert!(run(&["group", "describe", "copier"], "").contains("secure"), "with its offsets");
    assert!(run(&["txn", "list"], "").contains("copier-1"), "the copier's transactional id is listed");
    assert!(run(&["txn", "describe", "--transactional-id", "copier-1"], "").contains("CompleteCommit"));

    // -X overrides the file: a wrong password is refused, saying so.
    let mut wrong = secured(&["topic", "list"]);
    wrong.extend(["-X".into(), "sasl.password=not-the-password".into()]);
    let refused = once(&wrong.iter().map(String::as_str).collect::<Vec<_>>(), "", &[]);
    assert!(!refused.status.success(), "a wrong password is refused");
    let message = text(&refused);
    assert!(message.contains("SASL authentication as 'admin' with SCRAM-SHA-512"), "{message}");
    assert!(message.contains("SaslAuthenticationFailed"), "{message}");
    // A setting the admin client does not understand is refused by name, not ignored.
    let mut unknown = secured(&["topic", "list"]);
    unknown.extend(["-X".into(), "ssl.keystore.location=/tmp/keystore.p12".into()]);
    let refused = once(&unknown.iter().map(String::as_str).collect::<Vec<_>>(), "", &[]);
    assert!(!refused.status.success());
    assert!(text(&refused).contains("does not understand: ssl.keystore.location"), "{}", text(&refused));
    // Without the settings, the SASL_SSL port is not reachable.
    let bare = once(&["topic", "list", "--bootstrap", &at], "", &[]);
    assert!(!bare.status.success(), "plaintext to a SASL_SSL port fails");
}

#[test]
fn users_are_created_listed_and_deleted_over_kip_554() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path();
    certificates(dir);
    let (_broker, at) = sasl_broker(dir);
    let config = write_settings(dir, "admin.properties", &scram_settings(dir, "admin", "admin-secret"));
    let user = |args: &[&str], stdin: &str, env: &[(&str, &str)]| -> Output {
        let mut all = vec!["user"];
        all.extend_from_slice(args);
        all.extend(["--bootstrap", &at, "--command-config", &config]);
        once(&all, stdin, env)
    };
    let ok = |output: Output| -> String {
        assert!(output.status.success(), "{}", text(&output));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let kcat_login = |name: &str, password: &str, mechanism: &str| -> Output {
        let mut settings = scram_settings(dir, name, password);
        settings[1] = format!("sasl.mechanisms={mechanism}");
        kcat(&["-L", "-b", &at], &settings, None)
    };

    // No password given: refused before anything is sent.
    let missing = user(&["create", "bob"], "", &[]);
    assert!(!missing.status.success());
    assert!(text(&missing).contains("--password-stdin"), "{}", text(&missing));
    assert!(!kcat_login("bob", "bob-secret", "SCRAM-SHA-512").status.success(), "bob does not exist yet");

    ok(user(&["create", "bob", "--password-stdin"], "bob-secret\n", &[]));
    std::fs::write(dir.join("carol.password"), "carol-secret\n").expect("write");
    let carol_file = dir.join("carol.password").display().to_string();
    let created = ok(user(
        &["create", "carol", "--password-file", &carol_file, "--mechanism", "SCRAM-SHA-256", "--iterations", "8192"],
        "",
        &[],
    ));
    assert!(created.contains("SCRAM-SHA-256 credential set (8192 iterations)"), "{created}");
    ok(user(&["create", "dave"], "", &[("ONCE_USER_PASSWORD", "dave-secret")]));
    let listed = ok(user(&["list"], "", &[]));
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(
        lines,
        [
            "admin\tSCRAM-SHA-256(iterations=4096),SCRAM-SHA-512(iterations=4096)",
            "bob\tSCRAM-SHA-256(iterations=4096),SCRAM-SHA-512(iterations=4096)",
            "carol\tSCRAM-SHA-256(iterations=8192)",
            "dave\tSCRAM-SHA-256(iterations=4096),SCRAM-SHA-512(iterations=4096)",
        ],
        "{listed}"
    );
    let unknown = user(&["list", "nobody"], "", &[]);
    assert!(!unknown.status.success() && text(&unknown).contains("ResourceNotFound"), "{}", text(&unknown));

    // The new users log in with kcat (librdkafka), each mechanism they have.
    for (name, password, mechanism) in [
        ("bob", "bob-secret", "SCRAM-SHA-512"),
        ("bob", "bob-secret", "SCRAM-SHA-256"),
        ("carol", "carol-secret", "SCRAM-SHA-256"),
        ("dave", "dave-secret", "SCRAM-SHA-512"),
    ] {
        let login = kcat_login(name, password, mechanism);
        assert!(login.status.success(), "{name} with {mechanism}: {}", text(&login));
    }
    assert!(!kcat_login("carol", "carol-secret", "SCRAM-SHA-512").status.success(), "carol has no SHA-512");
    assert!(!kcat_login("bob", "wrong", "SCRAM-SHA-512").status.success());

    // Deleted: the login fails; deleting again says there is no such user.
    let deleted = ok(user(&["delete", "bob"], "", &[]));
    assert!(deleted.contains("SCRAM-SHA-256 credential deleted") && deleted.contains("SCRAM-SHA-512"), "{deleted}");
    let refused = kcat_login("bob", "bob-secret", "SCRAM-SHA-512");
    assert!(!refused.status.success(), "a deleted user cannot log in");
    assert!(text(&refused).contains("Authentication failed"), "{}", text(&refused));
    let again = user(&["delete", "bob"], "", &[]);
    assert!(!again.status.success() && text(&again).contains("no such user"), "{}", text(&again));
    let partial = user(&["delete", "carol", "--mechanism", "SCRAM-SHA-512"], "", &[]);
    assert!(!partial.status.success() && text(&partial).contains("no SCRAM-SHA-512 credential"), "{}", text(&partial));

    // confluent-kafka's AdminClient: KIP-554 as a Java/librdkafka admin tool uses it.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/scram_users.py");
    let ca = dir.join("ca.pem").display().to_string();
    let python = Command::new("python3")
        .args([script, &at, &ca, "admin", "admin-secret"])
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("run python3 (.ci/run installs confluent-kafka)");
    assert!(python.status.success(), "confluent-kafka: {}", text(&python));
    let answers = String::from_utf8_lossy(&python.stdout).into_owned();
    let expected = [
        "upsert py-other OK",
        "upsert py-user OK",
        "describe py-user [('SCRAM_SHA_512', 4096)]",
        "describe nobody RESOURCE_NOT_FOUND",
        "alter both DUPLICATE_RESOURCE",
        "alter few UNACCEPTABLE_CREDENTIAL",
        "alter ghost RESOURCE_NOT_FOUND",
        "alter py-other OK",
    ];
    for line in expected {
        assert!(answers.lines().any(|answer| answer == line), "missing {line:?} in:\n{answers}");
    }
    let last = answers.lines().rfind(|line| line.starts_with("all ")).expect("a final listing");
    assert!(last.contains("('py-user', [('SCRAM_SHA_512', 4096)])") && !last.contains("py-other"), "{last}");
    // A user made by confluent-kafka (salt and salted password from librdkafka) logs in.
    let login = kcat_login("py-user", "py-secret", "SCRAM-SHA-512");
    assert!(login.status.success(), "py-user: {}", text(&login));
}

#[test]
fn client_commands_over_ssl_with_mutual_tls() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path();
    certificates(dir);
    let (plain, ssl) = (free_port(), free_port());
    let listeners = [format!("PLAINTEXT://127.0.0.1:{plain}"), format!("SSL://127.0.0.1:{ssl}")];
    // The broker's certificate names elsewhere.example, not 127.0.0.1.
    let path = |name: &str| dir.join(name).display().to_string();
    let (cert, key, ca) = (path("elsewhere.pem"), path("elsewhere.key"), path("ca.pem"));
    let args = [
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-client-ca",
        &ca,
        "--listener",
        &listeners[0],
        "--listener",
        &listeners[1],
    ];
    let _broker = BrokerProcess::start_with_listeners(&args, plain);
    let at = format!("127.0.0.1:{ssl}");
    let base = vec!["security.protocol=SSL".to_string(), format!("ssl.ca.location={ca}")];
    let mut no_certificate = base.clone();
    no_certificate.push("ssl.endpoint.identification.algorithm=none".into());
    let mut mtls = base.clone();
    mtls.push(format!("ssl.certificate.location={}", path("client.pem")));
    mtls.push(format!("ssl.key.location={}", path("client.key")));
    let mut any_name = mtls.clone();
    any_name.push("ssl.endpoint.identification.algorithm=none".into());
    let config = write_settings(dir, "mtls.properties", &any_name);
    let run = |args: &[&str], stdin: &str| -> String {
        let mut all = args.to_vec();
        all.extend(["--bootstrap", &at, "--command-config", &config]);
        once_ok(&all, stdin)
    };

    assert!(run(&["topic", "create", "certified"], "").contains("created topic certified"));
    assert!(run(&["topic", "list"], "").contains("certified\t"));
    run(&["produce", "certified"], "x\ny\n");
    assert_eq!(run(&["consume", "certified", "--from-beginning"], ""), "x\ny\n");
    run(&["group", "list"], "");
    run(&["txn", "list"], "");

    // The host name is checked unless told otherwise; a client certificate is required.
    for (settings, expected) in [(&mtls, "not valid for name"), (&no_certificate, "CertificateRequired")] {
        let file = write_settings(dir, "other.properties", settings);
        let refused = once(&["topic", "list", "--bootstrap", &at, "--command-config", &file], "", &[]);
        assert!(!refused.status.success(), "{settings:?} must be refused");
        assert!(text(&refused).contains(expected), "{settings:?}: {}", text(&refused));
    }
}
