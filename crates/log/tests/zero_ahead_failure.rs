//! A write of zeros ahead of the appends that fails (the disk full, the file size limit reached) is
//! not the append's: the append succeeds, the log keeps serving and syncing, a clean close right
//! after it cuts what zeros were written, the segment's file grows with each append from then on (no
//! zeros tried again), and an unclean reopen finds every batch. The failure is real: the test runs itself again in a child process whose file size limit
//! (`RLIMIT_FSIZE`, bytes) lets the batches in but stops the zeros after them with `EFBIG` — the
//! limit is process-wide, hence a child of its own, and `SIGXFSZ` is ignored there so that the
//! write returns the error instead of the signal ending the process.

mod common;

use std::path::Path;
use std::process::Command;

use common::{append, expected_read, file_lengths, small_config, Stored};
use once_log::{Log, LogConfig};
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

const CHILD: &str = "ONCE_LOG_ZERO_FAILURE_CHILD";
const STEP: u64 = 4096;
/// The child's file size limit: past the step the first zeros go to, short of the second's end.
const LIMIT: u64 = 6000;

#[test]
fn a_failed_write_of_zeros_leaves_the_appends_whole() {
    if std::env::var_os(CHILD).is_none() {
        let exe = std::env::current_exe().expect("this test's executable");
        let output = Command::new("sh")
            .arg("-c")
            .arg("trap '' XFSZ; exec \"$0\" --exact \"$1\" --test-threads 1 --nocapture")
            .arg(exe)
            .arg("a_failed_write_of_zeros_leaves_the_appends_whole")
            .env(CHILD, "1")
            .output()
            .expect("run the child");
        // Captured, not inherited: under the limit, the child's writes to a log file it inherited
        // (CI's, past 6,000 bytes) would fail too.
        let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "the child test failed ({}):\n{stdout}\n{stderr}", output.status);
        assert!(stdout.contains("1 passed"), "the child ran the test:\n{stdout}");
        return;
    }
    in_child();
}

fn in_child() {
    let unlimited = getrlimit(Resource::Fsize);
    let config = LogConfig { zero_ahead_bytes: STEP, ..small_config(1 << 30) };

    // A clean close right after the failure, the file still longer than its batches: the zeros'
    // intended end is kept as a bound, so the close cuts all that was written, and the next open is
    // clean.
    let closed = tempfile::tempdir().expect("tempdir");
    let (log, stored, end) = fail_zeros(closed.path(), &config, &unlimited);
    log.close().expect("close after a failed write of zeros");
    setrlimit(Resource::Fsize, unlimited).expect("lift the limit");
    assert_eq!(file_lengths(closed.path())[0], end, "the close cut the zeros written before the failure");
    let log = Log::open(closed.path(), config.clone()).expect("reopen");
    assert!(log.recovery_stats().clean, "the index files describe the cut file");
    let last = stored.last().expect("appended").last_offset + 1;
    assert_eq!(log.read(0, usize::MAX, last).expect("read"), expected_read(&stored, 0, usize::MAX, last));
    drop(log);

    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, mut stored, mut end) = fail_zeros(dir.path(), &config, &unlimited);
    let file_len = || file_lengths(dir.path())[0];

    // The limit lifted (as space freed on a disk): appends go on; none is followed by zeros again,
    // so the file grows with each append past what was written, and ends with the batches.
    setrlimit(Resource::Fsize, unlimited).expect("lift the limit");
    let mut past = 0;
    while past < 6 {
        stored.push(append(&mut log, 1, 1000, stored.len() as i64));
        log.sync().expect("sync after the failure");
        end += stored.last().expect("appended").bytes.len() as u64;
        if end > LIMIT {
            assert_eq!(file_len(), end, "no zeros ahead in this segment after the failure");
            past += 1;
        }
    }
    assert!(end > 2 * STEP, "the appends ran past where the failed zeros would have ended");
    let last = stored.last().expect("appended").last_offset + 1;
    assert_eq!(log.read(0, usize::MAX, last).expect("read"), expected_read(&stored, 0, usize::MAX, last));

    // An unclean reopen finds every batch, and no zero tail.
    drop(log);
    let log = Log::open(dir.path(), config).expect("reopen");
    assert!(!log.recovery_stats().clean, "dropped without a close");
    assert_eq!(log.recovery_stats().zero_tail_bytes, 0, "the file ended with the batches");
    assert_eq!(log.log_end_offset(), last, "every batch survives");
    assert_eq!(log.read(0, usize::MAX, last).expect("read"), expected_read(&stored, 0, usize::MAX, last));
}

/// Opens a log in `dir` and, under the file size limit, appends up to and just past the first step:
/// the zeros after it would end at 2 × STEP, past the limit, so their write stops at the limit and
/// fails. Returns the log (the limit still in force), its batches and their end.
fn fail_zeros(dir: &Path, config: &LogConfig, unlimited: &Rlimit) -> (Log, Vec<Stored>, u64) {
    let mut log = Log::open(dir, config.clone()).expect("open");
    setrlimit(Resource::Fsize, Rlimit { current: Some(LIMIT), maximum: unlimited.maximum }).expect("lower the limit");
    let mut stored = Vec::new();
    let mut end = 0;
    while end <= STEP {
        stored.push(append(&mut log, 1, 1000, stored.len() as i64));
        log.sync().expect("sync while zeros fail");
        end += stored.last().expect("appended").bytes.len() as u64;
        assert!(end < LIMIT, "the batches fit under the limit");
    }
    assert_eq!(file_lengths(dir)[0], LIMIT, "the zeros' write got as far as the limit and failed there");
    assert!(!log.is_failed(), "a failed write of zeros does not latch the log");
    (log, stored, end)
}
