//! A fault-injecting TCP proxy between Kafka clients and a broker: it forwards requests untouched
//! and, with a seeded probability, swallows a response after the broker has acted on its request and
//! resets the connection — the lost acknowledgement that makes producers retry.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct FaultProxy {
    pub port: u16,
    /// Faults are injected only while this is set.
    pub faults: Arc<AtomicBool>,
    /// Responses swallowed so far (each followed by a connection reset).
    pub dropped: Arc<AtomicUsize>,
}

/// Binds the proxy's port first, so the broker can be started advertising it.
pub fn bind() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let port = listener.local_addr().expect("proxy addr").port();
    (listener, port)
}

/// Serves `listener`, forwarding to `upstream`. One in `drop_one_in` responses is swallowed while faults
/// are on; `seed` makes the choice replayable.
pub fn start(listener: TcpListener, upstream: String, drop_one_in: u64, seed: u64) -> FaultProxy {
    let port = listener.local_addr().expect("proxy addr").port();
    let faults = Arc::new(AtomicBool::new(true));
    let dropped = Arc::new(AtomicUsize::new(0));
    let state = Arc::new(AtomicU64::new(seed));
    let (faults_for_loop, dropped_for_loop) = (faults.clone(), dropped.clone());
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(broker) = TcpStream::connect(&upstream) else { continue };
            let (faults, dropped, state) = (faults_for_loop.clone(), dropped_for_loop.clone(), state.clone());
            spawn_pair(client, broker, drop_one_in, faults, dropped, state);
        }
    });
    FaultProxy { port, faults, dropped }
}

fn next_random(state: &AtomicU64) -> u64 {
    let mut current = state.load(Ordering::Relaxed);
    loop {
        let next = current.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        match state.compare_exchange(current, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next >> 33,
            Err(seen) => current = seen,
        }
    }
}

fn spawn_pair(
    client: TcpStream,
    broker: TcpStream,
    drop_one_in: u64,
    faults: Arc<AtomicBool>,
    dropped: Arc<AtomicUsize>,
    state: Arc<AtomicU64>,
) {
    let _ = client.set_nodelay(true);
    let _ = broker.set_nodelay(true);
    let (mut client_reader, mut broker_writer) =
        (client.try_clone().expect("clone"), broker.try_clone().expect("clone"));
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_reader, &mut broker_writer);
        let _ = broker_writer.shutdown(Shutdown::Both);
    });
    std::thread::spawn(move || {
        let (mut broker_reader, mut client_writer) = (broker, client);
        loop {
            let mut prefix = [0u8; 4];
            if broker_reader.read_exact(&mut prefix).is_err() {
                break;
            }
            let mut frame = vec![0u8; i32::from_be_bytes(prefix).max(0) as usize];
            if broker_reader.read_exact(&mut frame).is_err() {
                break;
            }
            if faults.load(Ordering::Relaxed) && next_random(&state).is_multiple_of(drop_one_in) {
                dropped.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
                break;
            }
            if client_writer.write_all(&prefix).and_then(|_| client_writer.write_all(&frame)).is_err() {
                break;
            }
        }
        let _ = client_writer.shutdown(Shutdown::Both);
        let _ = broker_reader.shutdown(Shutdown::Both);
    });
}
