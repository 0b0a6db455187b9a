//! The credential store: durable across reopen, replaced atomically, never silently emptied, one
//! writer at a time, and usable as the lookup of an exchange.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use common::TestClient;
use once_auth::{AuthError, CredentialChange, CredentialStore, ScramCredential, ScramMechanism, ScramServer};

fn credential(password: &str, mechanism: ScramMechanism, iterations: u32) -> ScramCredential {
    ScramCredential::new(password, mechanism, iterations).expect("valid credential")
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

#[test]
fn open_creates_an_empty_private_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("credentials.json");
    let store = CredentialStore::open(&path).expect("open");
    assert!(store.list().is_empty());
    assert!(path.exists(), "created at open, not at the first change");
    assert_eq!(mode(&path), 0o600);
    drop(store);
    assert!(CredentialStore::open(&path).expect("reopen").list().is_empty());
}

#[test]
fn changes_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("credentials.json");
    let alice_512 = credential("a", ScramMechanism::Sha512, 8192);
    let alice_256 = credential("a", ScramMechanism::Sha256, 4096);
    let bob_256 = credential("b", ScramMechanism::Sha256, 4096);
    {
        let store = CredentialStore::open(&path).expect("open");
        store.upsert("alice", ScramMechanism::Sha512, alice_512.clone()).expect("upsert");
        store.upsert("alice", ScramMechanism::Sha256, alice_256.clone()).expect("upsert");
        store.upsert("bob", ScramMechanism::Sha256, credential("old", ScramMechanism::Sha256, 4096)).expect("upsert");
        store.upsert("bob", ScramMechanism::Sha256, bob_256.clone()).expect("replace");
        store.upsert("a,b=c", ScramMechanism::Sha256, alice_256.clone()).expect("odd name");
        assert!(store.delete("a,b=c", ScramMechanism::Sha256).expect("delete"));
        assert!(!store.delete("a,b=c", ScramMechanism::Sha256).expect("delete again"));
        assert!(!store.delete("nobody", ScramMechanism::Sha512).expect("delete unknown"));
    }
    let store = CredentialStore::open(&path).expect("reopen");
    assert_eq!(store.get("alice", ScramMechanism::Sha512), Some(alice_512));
    assert_eq!(store.get("alice", ScramMechanism::Sha256), Some(alice_256));
    assert_eq!(store.get("bob", ScramMechanism::Sha256), Some(bob_256));
    assert_eq!(store.get("bob", ScramMechanism::Sha512), None);
    assert_eq!(
        store.list(),
        vec![
            ("alice".to_owned(), vec![(ScramMechanism::Sha256, 4096), (ScramMechanism::Sha512, 8192)]),
            ("bob".to_owned(), vec![(ScramMechanism::Sha256, 4096)]),
        ],
        "a user whose last credential was deleted is gone"
    );
    assert!(store.delete("bob", ScramMechanism::Sha256).expect("delete"));
    drop(store);
    let store = CredentialStore::open(&path).expect("reopen");
    assert_eq!(store.list().len(), 1);
}

#[test]
fn the_file_holds_verifiers_not_passwords() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("credentials.json");
    let store = CredentialStore::open(&path).expect("open");
    store
        .upsert("alice", ScramMechanism::Sha512, credential("correct horse", ScramMechanism::Sha512, 4096))
        .expect("upsert");
    let text = fs::read_to_string(&path).expect("read");
    assert!(!text.contains("correct horse"));
    let json: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let stored = &json["users"]["alice"]["SCRAM-SHA-512"];
    assert_eq!(stored["iterations"], 4096);
    for field in ["salt", "stored_key", "server_key"] {
        assert!(stored[field].is_string(), "{field} in base64");
    }
    assert_eq!(mode(&path), 0o600, "every replacement is private too");
}

#[test]
fn changes_replace_the_file_atomically() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("credentials.json");
    let store = CredentialStore::open(&path).expect("open");
    let inode_before = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).expect("metadata"));
    store.upsert("alice", ScramMechanism::Sha256, credential("a", ScramMechanism::Sha256, 4096)).expect("upsert");
    let inode_after = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).expect("metadata"));
    assert_ne!(inode_before, inode_after, "replaced by rename, not rewritten in place");
    let names: Vec<String> = fs::read_dir(dir.path())
        .expect("read_dir")
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|name| name.ends_with(".tmp")), "no temporary file left: {names:?}");
}

#[test]
fn a_crashed_change_leaves_the_old_file_and_is_forgotten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("credentials.json");
    let alice = credential("a", ScramMechanism::Sha256, 4096);
    {
        let store = CredentialStore::open(&path).expect("open");
        store.upsert("alice", ScramMechanism::Sha256, alice.clone()).expect("upsert");
    }
    // What a crash between writing the temporary file and renaming it leaves: half a file.
    let full = fs::read(&path).expect("read");
    fs::write(dir.path().join("credentials.json.tmp"), &full[..full.len() / 2]).expect("write");
    let store = CredentialStore::open(&path).expect("the committed file is read");
    assert_eq!(store.get("alice", ScramMechanism::Sha256), Some(alice));
    assert!(!dir.path().join("credentials.json.tmp").exists(), "the leftover is deleted");
    store.upsert("bob", ScramMechanism::Sha256, credential("b", ScramMechanism::Sha256, 4096)).expect("changes go on");
}

#[test]
fn a_failed_write_changes_nothing_and_latches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("credentials.json");
    let store = CredentialStore::open(&path).expect("open");
    let alice = credential("a", ScramMechanism::Sha256, 4096);
    store.upsert("alice", ScramMechanism::Sha256, alice.clone()).expect("upsert");
    let before = fs::read(&path).expect("read");
    // A directory where the temporary file must be created: the write fails (even as root).
    let temporary = dir.path().join("credentials.json.tmp");
    fs::create_dir(&temporary).expect("mkdir");

    let failed = store.upsert("bob", ScramMechanism::Sha256, credential("b", ScramMechanism::Sha256, 4096));
    assert!(matches!(failed, Err(AuthError::Io { .. })), "{failed:?}");
    assert_eq!(store.get("bob", ScramMechanism::Sha256), None, "not visible: never durable");
    assert_eq!(fs::read(&path).expect("read"), before, "the file is untouched");

    fs::remove_dir(&temporary).expect("rmdir");
    let refused = store.delete("alice", ScramMechanism::Sha256);
    assert!(matches!(refused, Err(AuthError::StoreLatched { .. })), "{refused:?}");
    assert_eq!(store.get("alice", ScramMechanism::Sha256), Some(alice.clone()), "reads go on");
    drop(store);

    let store = CredentialStore::open(&path).expect("reopen unlatches");
    assert_eq!(store.get("alice", ScramMechanism::Sha256), Some(alice));
    assert!(store.delete("alice", ScramMechanism::Sha256).expect("delete"));
}

fn alice(value: &mut serde_json::Value) -> &mut serde_json::Value {
    &mut value["users"]["alice"]["SCRAM-SHA-256"]
}

#[test]
fn corrupt_files_are_refused_and_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("credentials.json");
    {
        let store = CredentialStore::open(&path).expect("open");
        store.upsert("alice", ScramMechanism::Sha256, credential("a", ScramMechanism::Sha256, 4096)).expect("upsert");
    }
    let valid = fs::read_to_string(&path).expect("read");
    let json: serde_json::Value = serde_json::from_str(&valid).expect("JSON");
    let edit = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut edited = json.clone();
        change(&mut edited);
        serde_json::to_string(&edited).expect("JSON")
    };
    let corrupt: Vec<String> = vec![
        String::new(),
        "{".to_owned(),
        valid[..valid.len() / 2].to_owned(),
        "[]".to_owned(),
        edit(&|v| v["format"] = 2.into()),
        edit(&|v| v["unknown_user_key"] = "c2hvcnQ=".into()),
        edit(&|v| v["surprise"] = true.into()),
        edit(&|v| alice(v)["iterations"] = 4095.into()),
        edit(&|v| alice(v)["iterations"] = 16385.into()),
        edit(&|v| alice(v)["salt"] = "".into()),
        edit(&|v| alice(v)["stored_key"] = "not base64!".into()),
        edit(&|v| alice(v)["server_key"] = "AAAA".into()),
        edit(&|v| v["users"]["alice"]["SCRAM-SHA-1"] = v["users"]["alice"]["SCRAM-SHA-256"].clone()),
        edit(&|v| v["users"]["alice"] = serde_json::json!({})),
        edit(&|v| v["users"][""] = v["users"]["alice"].clone()),
    ];
    for text in corrupt {
        fs::write(&path, &text).expect("write");
        let result = CredentialStore::open(&path);
        assert!(matches!(result, Err(AuthError::CorruptStore { .. })), "{text:?}");
        assert_eq!(fs::read_to_string(&path).expect("read"), text, "never rewritten");
    }
    fs::write(&path, &valid).expect("write");
    assert_eq!(CredentialStore::open(&path).expect("valid again").list().len(), 1);
}

#[test]
fn corrupt_store_errors_do_not_quote_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("credentials.json");
    fs::write(&path, r#"{"format": "c2VjcmV0LWtleS1tYXRlcmlhbA=="}"#).expect("write");
    let error = CredentialStore::open(&path).err().expect("corrupt").to_string();
    assert!(!error.contains("c2VjcmV0"), "{error}");
}

#[test]
fn one_store_per_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("credentials.json");
    let store = CredentialStore::open(&path).expect("open");
    assert!(matches!(CredentialStore::open(&path), Err(AuthError::StoreInUse { .. })));
    drop(store);
    CredentialStore::open(&path).expect("free again once closed");
}

#[test]
fn upsert_checks_its_arguments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = CredentialStore::open(dir.path().join("credentials.json")).expect("open");
    let sha256 = credential("a", ScramMechanism::Sha256, 4096);
    assert!(matches!(
        store.upsert("alice", ScramMechanism::Sha512, sha256.clone()),
        Err(AuthError::InvalidCredential(_))
    ));
    for user in ["", "a\0b", &"u".repeat(256)] {
        assert!(matches!(store.upsert(user, ScramMechanism::Sha256, sha256.clone()), Err(AuthError::InvalidUser(_))));
    }
    assert!(store.list().is_empty());
}

#[test]
fn concurrent_changes_are_all_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("credentials.json");
    let store = Arc::new(CredentialStore::open(&path).expect("open"));
    let threads: Vec<_> = (0..4)
        .map(|thread| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..5 {
                    let user = format!("user-{thread}-{i}");
                    let credential = credential("pw", ScramMechanism::Sha256, 4096);
                    store.upsert(&user, ScramMechanism::Sha256, credential).expect("upsert");
                    assert!(store.get(&user, ScramMechanism::Sha256).is_some(), "visible on return");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("no panic");
    }
    drop(store);
    assert_eq!(CredentialStore::open(&path).expect("reopen").list().len(), 20);
}

#[test]
fn the_store_serves_exchanges_and_keeps_unknown_users_salts_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("credentials.json");
    let mechanism = ScramMechanism::Sha512;
    let unknown = TestClient::new(mechanism, "mallory", "pw");
    let salt_of_unknown = |store: &Arc<CredentialStore>| {
        let mut server = ScramServer::new(mechanism, Arc::clone(store));
        let first = server.client_first(unknown.client_first().as_bytes()).expect("first");
        String::from_utf8(first).expect("UTF-8").split(',').nth(1).expect("s=").to_owned()
    };
    let store = Arc::new(CredentialStore::open(&path).expect("open"));
    store.upsert("alice", mechanism, credential("pw", mechanism, 4096)).expect("upsert");
    let client = TestClient::new(mechanism, "alice", "pw");
    let mut server = ScramServer::new(mechanism, Arc::clone(&store));
    let first = server.client_first(client.client_first().as_bytes()).expect("first");
    let last = client.client_final(&first);
    let (server_final, user) = server.client_final(last.message.as_bytes()).expect("authenticated");
    assert_eq!(String::from_utf8_lossy(&server_final), last.expected_server_final);
    assert_eq!(user, "alice");

    let salt_before = salt_of_unknown(&store);
    drop(server);
    drop(store);
    let store = Arc::new(CredentialStore::open(&path).expect("reopen"));
    assert_eq!(salt_of_unknown(&store), salt_before, "a restart does not give unknown users away");
}

#[test]
fn alter_applies_a_batch_in_one_write_or_not_at_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("credentials.json");
    let store = CredentialStore::open(&path).expect("open");
    store.upsert("old", ScramMechanism::Sha256, credential("pw", ScramMechanism::Sha256, 4096)).expect("upsert");
    let changes = [
        CredentialChange::Upsert {
            user: "alice".into(),
            mechanism: ScramMechanism::Sha256,
            credential: credential("pw", ScramMechanism::Sha256, 4096),
        },
        CredentialChange::Upsert {
            user: "alice".into(),
            mechanism: ScramMechanism::Sha512,
            credential: credential("pw", ScramMechanism::Sha512, 8192),
        },
        CredentialChange::Delete { user: "old".into(), mechanism: ScramMechanism::Sha256 },
        CredentialChange::Delete { user: "nobody".into(), mechanism: ScramMechanism::Sha256 },
    ];
    store.alter(&changes).expect("alter");
    let expected = vec![("alice".to_owned(), vec![(ScramMechanism::Sha256, 4096), (ScramMechanism::Sha512, 8192)])];
    assert_eq!(store.list(), expected);
    // A batch with one bad change changes nothing.
    let bad = [
        CredentialChange::Delete { user: "alice".into(), mechanism: ScramMechanism::Sha256 },
        CredentialChange::Upsert {
            user: String::new(),
            mechanism: ScramMechanism::Sha256,
            credential: credential("pw", ScramMechanism::Sha256, 4096),
        },
    ];
    assert!(matches!(store.alter(&bad), Err(AuthError::InvalidUser(_))));
    assert_eq!(store.list(), expected);
    drop(store);
    assert_eq!(CredentialStore::open(&path).expect("reopen").list(), expected);
}
