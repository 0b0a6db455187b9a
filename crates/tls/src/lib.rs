//! `once-tls`: the broker's TLS identity as a rustls [`ServerConfig`](rustls::ServerConfig), built
//! from PEM files in one place for both edges — the Kafka listeners (SSL, SASL_SSL; once-broker
//! wraps it in its acceptor) and the HTTP edge (`--http-listen https://…`, once-http).
//!
//! # Layout
//! - [`server_config`]: certificate chain, key and optionally a client CA (mTLS) → a server config
//!   with the `ring` provider, TLS 1.3 and 1.2; every failure a message naming the file.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|error| format!("reading certificates from {}: {error}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|error| format!("reading certificates from {}: {error}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certificates)
}

/// The server config for the certificate chain at `cert` (PEM, leaf first) and its key at `key`, or
/// a message naming the file and what is wrong with it. With `client_ca`, clients must present a
/// certificate it signed (mTLS); without, none is asked for. ALPN is left empty: the caller sets
/// what it speaks.
pub fn server_config(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<rustls::ServerConfig, String> {
    // ring's provider has no post-quantum key exchange (hence deprecated in favour of aws-lc-rs,
    // whose build needs cmake); TLS 1.3 and 1.2 with the standard suites are what clients use.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(cert)?;
    let private_key = PrivateKeyDer::from_pem_file(key)
        .map_err(|error| format!("reading the private key from {}: {error}", key.display()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for certificate in certificates(ca)? {
                roots.add(certificate).map_err(|error| format!("{}: {error}", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|error| format!("client CA {}: {error}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    builder
        .with_single_cert(chain, private_key)
        .map_err(|error| format!("{} and {}: {error}", cert.display(), key.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_are_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let missing = server_config(&cert, &key, None).expect_err("no file");
        assert!(missing.contains("cert.pem"), "{missing}");
        std::fs::write(&cert, "not PEM\n").expect("write");
        let empty = server_config(&cert, &key, None).expect_err("no certificate");
        assert!(empty.contains("no PEM certificate"), "{empty}");
    }
}
