//! The admin client's connection: TCP, then TLS (rustls) and a SASL login (SaslHandshake v1 and
//! SaslAuthenticate, KIP-152) as its [`AdminSecurity`] asks — what librdkafka does with the same
//! settings, for `once topic|group|txn|user`.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};

use crate::client_settings::TlsSettings;

/// Where the system's CA bundle usually is (Debian/Ubuntu, Fedora/RHEL, Alpine/macOS-like), used
/// when `ssl.ca.location` is not given — librdkafka probes the same places.
const SYSTEM_CA_BUNDLES: &[&str] =
    &["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"];

/// A connection to a broker, in the clear or in TLS.
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(stream) => stream.read(buf),
            Transport::Tls(stream) => stream.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(stream) => stream.write(buf),
            Transport::Tls(stream) => stream.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(stream) => stream.flush(),
            Transport::Tls(stream) => stream.flush(),
        }
    }
}

/// A rustls client config for `settings`, built once per command and shared by its connections.
pub fn tls_config(settings: &TlsSettings) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    // The ring provider, as the broker's listeners use (no cmake/NASM build for aws-lc-rs).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let ca = match &settings.ca {
        Some(ca) => ca.clone(),
        None => SYSTEM_CA_BUNDLES.iter().map(PathBuf::from).find(|path| path.exists()).context(
            "TLS needs ssl.ca.location (the CA that signed the broker's certificate); no system CA bundle was found",
        )?,
    };
    for certificate in certificates(&ca)? {
        roots.add(certificate).with_context(|| format!("ssl.ca.location {}", ca.display()))?;
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .with_context(|| format!("ssl.ca.location {}", ca.display()))?;
    let verifier: Arc<dyn ServerCertVerifier> =
        if settings.verify_hostname { webpki } else { Arc::new(AnyHostname { webpki }) };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match &settings.client_certificate {
        Some((certificate, key)) => {
            let chain = certificates(certificate)?;
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("reading ssl.key.location {} (an unencrypted PEM key)", key.display()))?;
            builder.with_client_auth_cert(chain, key).context("ssl.certificate.location and ssl.key.location")?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

fn certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<_, _>>())
        .with_context(|| format!("reading certificates from {}", path.display()))?;
    if certificates.is_empty() {
        bail!("{}: no PEM certificate in it", path.display());
    }
    Ok(certificates)
}

/// Opens `address` (HOST:PORT) and, with `tls`, completes the TLS handshake, verifying the broker's
/// certificate for HOST.
pub fn connect(address: &str, tls: Option<&Arc<rustls::ClientConfig>>) -> anyhow::Result<Transport> {
    let stream = TcpStream::connect(address).with_context(|| format!("connecting to {address}"))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
    let Some(config) = tls else { return Ok(Transport::Plain(stream)) };
    let host = address.rsplit_once(':').map(|(host, _)| host).unwrap_or(address);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_owned()).with_context(|| format!("'{host}' is not a host name"))?;
    let connection = ClientConnection::new(config.clone(), name).context("starting TLS")?;
    let mut stream = StreamOwned::new(connection, stream);
    // Handshake now, so a certificate problem is reported as one rather than as a failed request.
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock).with_context(|| {
            format!("TLS handshake with {address} (is it a TLS listener? is ssl.ca.location its CA?)")
        })?;
    }
    Ok(Transport::Tls(Box::new(stream)))
}

/// `ssl.endpoint.identification.algorithm=none`: the certificate chain is verified as usual, but a
/// name that does not match the host is accepted (librdkafka's meaning of the setting).
#[derive(Debug)]
struct AnyHostname {
    webpki: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for AnyHostname {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}
