//! A SCRAM client for the tests, written straight from RFC 5802 over the RustCrypto crates, without
//! the crate's own helpers: if the server computed something wrong, this client does not share the
//! mistake.

#![allow(dead_code)] // each test file uses part of it

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use once_auth::ScramMechanism;
use sha2::{Digest, Sha256, Sha512};

fn hmac(mechanism: ScramMechanism, key: &[u8], data: &[u8]) -> Vec<u8> {
    match mechanism {
        ScramMechanism::Sha256 => {
            let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        ScramMechanism::Sha512 => {
            let mut mac = <Hmac<Sha512> as KeyInit>::new_from_slice(key).expect("any key length");
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
    }
}

fn hash(mechanism: ScramMechanism, data: &[u8]) -> Vec<u8> {
    match mechanism {
        ScramMechanism::Sha256 => Sha256::digest(data).to_vec(),
        ScramMechanism::Sha512 => Sha512::digest(data).to_vec(),
    }
}

/// `Hi(password, salt, iterations)`.
pub fn salted_password(mechanism: ScramMechanism, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
    match mechanism {
        ScramMechanism::Sha256 => {
            pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password.as_bytes(), salt, iterations).to_vec()
        }
        ScramMechanism::Sha512 => {
            pbkdf2::pbkdf2_hmac_array::<Sha512, 64>(password.as_bytes(), salt, iterations).to_vec()
        }
    }
}

/// `saslname`: `,` as `=2C`, `=` as `=3D`.
pub fn escape(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

/// One client side of one exchange.
pub struct TestClient {
    pub mechanism: ScramMechanism,
    pub gs2_header: String,
    pub user: String,
    pub password: String,
    pub client_nonce: String,
}

/// What the client sends last and what it expects back.
pub struct ClientFinal {
    pub message: String,
    /// The `v=` the server must answer.
    pub expected_server_final: String,
}

impl TestClient {
    pub fn new(mechanism: ScramMechanism, user: &str, password: &str) -> Self {
        TestClient {
            mechanism,
            gs2_header: "n,,".to_owned(),
            user: user.to_owned(),
            password: password.to_owned(),
            client_nonce: "fyko+d2lbbFgONRv9qkxdawL".to_owned(),
        }
    }

    pub fn client_first_bare(&self) -> String {
        format!("n={},r={}", escape(&self.user), self.client_nonce)
    }

    pub fn client_first(&self) -> String {
        format!("{}{}", self.gs2_header, self.client_first_bare())
    }

    /// The client-final message for `server_first`, checking the server kept the client's nonce.
    pub fn client_final(&self, server_first: &[u8]) -> ClientFinal {
        self.client_final_with_nonce(server_first, None)
    }

    /// Like `client_final`, but with `r=` set to `nonce` when given (a broken or replaying client
    /// that still signs what it sends).
    pub fn client_final_with_nonce(&self, server_first: &[u8], nonce: Option<&str>) -> ClientFinal {
        let server_first = std::str::from_utf8(server_first).expect("server-first is UTF-8");
        let mut attributes = server_first.split(',');
        let nonce_sent = attributes.next().and_then(|a| a.strip_prefix("r=")).expect("r=");
        let salt = attributes.next().and_then(|a| a.strip_prefix("s=")).expect("s=");
        let iterations = attributes.next().and_then(|a| a.strip_prefix("i=")).expect("i=");
        assert!(attributes.next().is_none(), "server-first has three attributes");
        assert!(nonce_sent.starts_with(&self.client_nonce), "the server nonce extends the client's");
        assert!(nonce_sent.len() > self.client_nonce.len(), "the server added to the nonce");
        let salt = BASE64.decode(salt).expect("salt is base64");
        let iterations: u32 = iterations.parse().expect("i= is a number");

        let m = self.mechanism;
        let salted = salted_password(m, &self.password, &salt, iterations);
        let client_key = hmac(m, &salted, b"Client Key");
        let stored_key = hash(m, &client_key);
        let nonce = nonce.unwrap_or(nonce_sent);
        let without_proof = format!("c={},r={nonce}", BASE64.encode(&self.gs2_header));
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare());
        let client_signature = hmac(m, &stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&client_signature).map(|(k, s)| k ^ s).collect();
        let server_key = hmac(m, &salted, b"Server Key");
        let server_signature = hmac(m, &server_key, auth_message.as_bytes());
        ClientFinal {
            message: format!("{without_proof},p={}", BASE64.encode(proof)),
            expected_server_final: format!("v={}", BASE64.encode(server_signature)),
        }
    }
}

/// RFC 7677 section 3's example exchange (SCRAM-SHA-256, user "user", password "pencil").
pub mod rfc7677 {
    pub const RFC_CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    pub const RFC_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    pub const RFC_SERVER_NONCE_SUFFIX: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    pub const RFC_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    pub const RFC_SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    pub const RFC_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                    p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    pub const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
}
