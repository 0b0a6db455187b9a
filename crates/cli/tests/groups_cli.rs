//! `once group list|describe|reset-offsets|delete` against a real broker.

mod groups_support;
mod support;

use std::process::Command;

use groups_support::{committed_offsets, produce};
use support::{once, BrokerProcess};

fn once_fails(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_once")).args(args).output().expect("run once");
    assert!(!output.status.success(), "once {args:?} should fail");
    String::from_utf8_lossy(&output.stderr).to_string()
}

#[test]
fn group_commands_list_describe_reset_and_delete() {
    let broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    once(&["topic", "create", "tools", "--partitions", "2", "--bootstrap", &bootstrap]);
    produce(&bootstrap, "tools", &(0..10).map(|number: i32| (number % 2, format!("v-{number}"))).collect::<Vec<_>>());

    once(&["group", "reset-offsets", "tools-group", "--topic", "tools", "--to-offset", "2", "--bootstrap", &bootstrap]);
    assert_eq!(committed_offsets(&bootstrap, "tools-group", "tools", 2), vec![2, 2]);
    let listed = once(&["group", "list", "--bootstrap", &bootstrap]);
    assert!(listed.contains("tools-group\tstate=Empty"), "list shows the group: {listed}");
    let described = once(&["group", "describe", "tools-group", "--bootstrap", &bootstrap]);
    assert!(described.contains("tools\t0\t2\t5\t3"), "lag of partition 0 is 5 - 2: {described}");
    assert!(described.contains("tools\t1\t2\t5\t3"), "lag of partition 1 is 5 - 2: {described}");

    once(&["group", "reset-offsets", "tools-group", "--topic", "tools", "--to-latest", "--bootstrap", &bootstrap]);
    assert_eq!(committed_offsets(&bootstrap, "tools-group", "tools", 2), vec![5, 5]);
    once(&["group", "reset-offsets", "tools-group", "--topic", "tools", "--to-earliest", "--bootstrap", &bootstrap]);
    assert_eq!(committed_offsets(&bootstrap, "tools-group", "tools", 2), vec![0, 0]);
    let error = once_fails(&["group", "reset-offsets", "tools-group", "--topic", "tools", "--bootstrap", &bootstrap]);
    assert!(error.contains("--to-earliest"), "a target is required: {error}");

    once(&["group", "delete", "tools-group", "--bootstrap", &bootstrap]);
    assert_eq!(committed_offsets(&bootstrap, "tools-group", "tools", 2), vec![-1, -1]);
    let error = once_fails(&["group", "delete", "tools-group", "--bootstrap", &bootstrap]);
    assert!(error.contains("GroupIdNotFound"), "deleting twice fails: {error}");
}
