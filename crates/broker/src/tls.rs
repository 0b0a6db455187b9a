//! TLS for SSL and SASL_SSL listeners: the acceptor over once-tls's rustls config (the `ring`
//! provider) from PEM files — the certificate chain, its key, and optionally a client CA, which
//! makes client certificates required and verified (mTLS) — and a client certificate's subject.

use std::sync::Arc;

use once_node::config::TlsFiles;
use tokio_rustls::TlsAcceptor;

/// The acceptor for `files`, or a message naming the file and what is wrong with it (the PEM files
/// are read by once-tls, which the HTTP edge shares). With `client_certificates` and a client CA,
/// clients must present a certificate it signed (SSL listeners); without, none is asked for
/// (SASL_SSL listeners, which authenticate with SASL — Kafka too applies its broker-wide
/// `ssl.client.auth` to SSL listeners only).
pub fn acceptor(files: &TlsFiles, client_certificates: bool) -> Result<TlsAcceptor, String> {
    let client_ca = files.client_ca.as_deref().filter(|_| client_certificates);
    let config = once_tls::server_config(&files.cert, &files.key, client_ca)?;
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
