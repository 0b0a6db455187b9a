//! TLS for SSL and SASL_SSL listeners: rustls (with the `ring` provider) from PEM files — the
//! certificate chain, its key, and optionally a client CA, which makes client certificates
//! required and verified (mTLS).

use std::path::Path;
use std::sync::Arc;

use once_node::config::TlsFiles;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

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

/// The acceptor for `files`, or a message naming the file and what is wrong with it. With
/// `client_certificates` and a client CA, clients must present a certificate it signed (SSL
/// listeners); without, none is asked for (SASL_SSL listeners, which authenticate with SASL — Kafka
/// too applies its broker-wide `ssl.client.auth` to SSL listeners only).
pub fn acceptor(files: &TlsFiles, client_certificates: bool) -> Result<TlsAcceptor, String> {
    // ring's provider has no post-quantum key exchange (hence deprecated in favour of aws-lc-rs,
    // whose build needs cmake); TLS 1.3 and 1.2 with the standard suites are what Kafka clients use.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|error| format!("reading the private key from {}: {error}", files.key.display()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?;
    let builder = match files.client_ca.as_ref().filter(|_| client_certificates) {
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
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|error| format!("{} and {}: {error}", files.cert.display(), files.key.display()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The subject of a DER certificate as RFC 4514 text, most specific part first (`CN=alice,O=Acme`),
/// as Kafka's default SSL principal builder names it; `None` if the certificate does not parse (rustls
/// verified it already, so this does not happen with a CA-signed certificate).
pub fn subject(der: &[u8]) -> Option<String> {
    use x509_cert::der::Decode;
    let certificate = x509_cert::Certificate::from_der(der).ok()?;
    Some(certificate.tbs_certificate.subject.to_string())
}
