//! The tests' broker start-up is not fooled by another process on its port: readiness needs the
//! broker's own "serving" line, not just a port that accepts connections.

mod support;

use std::net::TcpListener;

use support::BrokerProcess;

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
