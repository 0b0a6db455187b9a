//! Random SASL frames at a running broker's SASL_PLAINTEXT listener, from many connections at once:
//! handshakes naming random or real mechanisms, SaslAuthenticate with random or almost-right bytes,
//! frames of random bytes. The broker answers or closes each connection, stays up, and a real
//! client logs in afterwards (kcat, SCRAM-SHA-512).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use kafka_protocol::messages::{ApiKey, RequestHeader, SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::{Encodable, StrBytes};
use support::security::kcat;
use support::{free_port, BrokerProcess};

/// xorshift64*: reproducible from the seed the test prints.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn bytes(&mut self, length: usize) -> Vec<u8> {
        (0..length).map(|_| self.next() as u8).collect()
    }
}

fn frame<R: Encodable>(api_key: ApiKey, version: i16, correlation_id: i32, body: &R) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("sasl-frames")));
    let mut bytes = BytesMut::new();
    header.encode(&mut bytes, api_key.request_header_version(version)).expect("header");
    body.encode(&mut bytes, version).expect("body");
    let mut framed = (bytes.len() as i32).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    framed
}

/// One connection's worth of random SASL traffic; returns when the broker closes it or the script
/// ends, with the number of responses read.
fn conversation(at: &str, random: &mut Random) -> usize {
    let mut socket = TcpStream::connect(at).expect("the SASL listener accepts");
    let mut answered = 0;
    socket.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mechanisms = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "", "plain"];
    for step in 0..random.below(6) + 1 {
        let correlation_id = step as i32;
        let bytes = match random.below(5) {
            0 => {
                let mechanism = mechanisms[random.below(mechanisms.len() as u64) as usize];
                let body = SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism));
                frame(ApiKey::SaslHandshake, random.below(2) as i16, correlation_id, &body)
            }
            1 | 2 => {
                let auth = match random.below(3) {
                    0 => {
                        let mut almost = b"\0alice\0alice-secret".to_vec();
                        let at = random.below(almost.len() as u64) as usize;
                        almost[at] ^= 1 + random.below(255) as u8;
                        almost
                    }
                    1 => format!("n,,n=alice,r={}", random.next()).into_bytes(),
                    _ => {
                        let length = random.below(200) as usize;
                        random.bytes(length)
                    }
                };
                let body = SaslAuthenticateRequest::default().with_auth_bytes(auth.into());
                frame(ApiKey::SaslAuthenticate, random.below(3) as i16, correlation_id, &body)
            }
            3 => {
                // A frame of random bytes with an honest length.
                let length = random.below(300) as usize;
                let body = random.bytes(length);
                let mut framed = (body.len() as i32).to_be_bytes().to_vec();
                framed.extend(body);
                framed
            }
            _ => {
                // A length past the unauthenticated limit (64 KiB), or negative.
                let length: i32 = if random.below(2) == 0 { 10 << 20 } else { -7 };
                length.to_be_bytes().to_vec()
            }
        };
        if socket.write_all(&bytes).is_err() {
            return answered;
        }
        let mut prefix = [0u8; 4];
        if socket.read_exact(&mut prefix).is_err() {
            return answered; // closed by the broker (or a request it does not answer): fine
        }
        let length = i32::from_be_bytes(prefix);
        assert!((0..1 << 20).contains(&length), "a sane response length: {length}");
        let mut response = vec![0u8; length as usize];
        if socket.read_exact(&mut response).is_err() {
            return answered;
        }
        answered += 1;
    }
    answered
}

#[test]
fn random_sasl_frames_do_not_hurt_the_broker() {
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_nanos() as u64 | 1;
    println!("seed {seed}");
    let (plain, sasl) = (free_port(), free_port());
    let listeners = [format!("PLAINTEXT://127.0.0.1:{plain}"), format!("SASL_PLAINTEXT://127.0.0.1:{sasl}")];
    let args = ["--listener", &listeners[0], "--listener", &listeners[1], "--scram-user", "alice:alice-secret"];
    let mut broker = BrokerProcess::start_with_listeners(&args, plain);
    let at = format!("127.0.0.1:{sasl}");
    let threads: Vec<_> = (0..8u64)
        .map(|thread| {
            let at = at.clone();
            std::thread::spawn(move || {
                let mut random = Random(seed.wrapping_add(thread.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1);
                (0..40).map(|_| conversation(&at, &mut random)).sum::<usize>()
            })
        })
        .collect();
    let answered: usize = threads
        .into_iter()
        .map(|thread| thread.join().unwrap_or_else(|_| panic!("a conversation thread failed (seed {seed})")))
        .sum();
    // Handshakes and refusals are answered before a connection closes: the frames reached the SASL code.
    assert!(answered >= 40, "{answered} answers to 320 conversations (seed {seed})");
    println!("{answered} answers");
    assert!(broker.is_running(), "the broker is still up (seed {seed})");
    let settings = [
        "security.protocol=SASL_PLAINTEXT".to_string(),
        "sasl.mechanisms=SCRAM-SHA-512".to_string(),
        "sasl.username=alice".to_string(),
        "sasl.password=alice-secret".to_string(),
    ];
    let listed = kcat(&["-L", "-b", &at], &settings, None);
    assert!(
        listed.status.success(),
        "a real login still works (seed {seed}): {}",
        String::from_utf8_lossy(&listed.stderr)
    );
}
