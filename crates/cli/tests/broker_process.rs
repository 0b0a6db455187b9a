//! The broker process itself: its start-up is not fooled by another process on its port (readiness
//! needs the broker's own "serving" line, not just a port that accepts connections), and it writes
//! zeros ahead of its logs' appends only on file systems where they pay.

mod support;

use std::net::TcpListener;
use std::path::Path;

use support::{produce_lines, BrokerProcess};

#[test]
fn a_port_held_by_another_listener_is_not_taken_for_a_ready_broker() {
    let squatter = TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let port = squatter.local_addr().expect("local address").port();
    let listener = format!("PLAINTEXT://127.0.0.1:{port}");
    let started = std::panic::catch_unwind(|| BrokerProcess::start_with_listeners(&["--listener", &listener], port));
    let problem = match started {
        Ok(_) => panic!("the broker was taken as ready on a port another listener holds"),
        Err(payload) => payload.downcast_ref::<String>().cloned().unwrap_or_default(),
    };
    assert!(problem.contains("exited early"), "the broker's own exit is reported: {problem}");
    assert!(problem.to_lowercase().contains("address"), "with its reason from the log: {problem}");
    drop(squatter);
}

/// A broker whose data directory is on tmpfs (`/dev/shm`) writes no zeros ahead of its appends, and
/// says why at start-up; one on disk (the usual temporary directory, or the target directory where
/// that is a tmpfs too) does, the same records leaving its segment a step (4 KiB while small) long.
#[test]
fn zeros_ahead_of_the_appends_only_where_the_file_system_takes_them() {
    let shm = Path::new("/dev/shm");
    assert_eq!(once_log::zeros_ahead_unsuited(shm), Some("tmpfs"), "/dev/shm is a tmpfs where this runs");
    let in_memory = tempfile::tempdir_in(shm).expect("temp dir in /dev/shm");
    let mut on_disk = tempfile::tempdir().expect("temp dir");
    if once_log::zeros_ahead_unsuited(on_disk.path()).is_some() {
        on_disk = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir in the target directory");
    }
    if let Some(file_system) = once_log::zeros_ahead_unsuited(on_disk.path()) {
        panic!("the temporary and target directories are on {file_system}: set TMPDIR to one on ext4 or XFS to run this test");
    }
    for (dir, zeros) in [(in_memory.path(), false), (on_disk.path(), true)] {
        let broker = BrokerProcess::start_with(&[], Some(dir.join("data")), None);
        produce_lines(&broker, "zeros", "one\ntwo\nthree\n");
        let segment = dir.join("data/topics/zeros/0/00000000000000000000.log");
        let len = std::fs::metadata(&segment).expect("the partition's segment").len();
        let said = broker.log().contains("no zeros written ahead");
        match zeros {
            true => assert!(len == 4096 && !said, "on disk: zeros to the first step ({len} B), nothing said"),
            false => assert!(len < 200 && said, "in memory: the batches only ({len} B), and why: {said}"),
        }
    }
}
