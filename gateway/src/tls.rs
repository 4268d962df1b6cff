//! TLS for the API listener: rustls with the ring provider, TLS 1.2 and 1.3 only, and client
//! certificates verified against the configured CA. A client certificate is optional at the
//! TLS layer (so `/metadata` answers without one); authorisation decides what a connection
//! without one may do.

use std::any::Any;
use std::sync::Arc;

use actix_tls::accept::rustls_0_23::TlsStream;
use actix_web::dev::Extensions;
use actix_web::rt::net::TcpStream;
use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::certs::fingerprint;
use crate::configuration::TlsSettings;

/// The client certificate a connection presented, verified against the client CA.
#[derive(Clone, Debug)]
pub struct PeerCertificate {
    /// SHA-256 of the DER end-entity certificate, lower-case hex.
    pub fingerprint: String,
    /// The subject's common name.
    pub subject_common_name: Option<String>,
}

pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn server_config(settings: &TlsSettings) -> anyhow::Result<ServerConfig> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&settings.certificate)
        .with_context(|| format!("failed to read the server certificate {}", settings.certificate.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", settings.certificate.display()))?;
    let key = PrivateKeyDer::from_pem_file(&settings.private_key)
        .with_context(|| format!("failed to read the server private key {}", settings.private_key.display()))?;
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(&settings.client_ca)
        .with_context(|| format!("failed to read the client CA bundle {}", settings.client_ca.display()))?
    {
        roots.add(certificate.context("the client CA bundle holds an unreadable certificate")?).context("invalid client CA certificate")?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crypto_provider())
        .allow_unauthenticated()
        .build()
        .context("failed to build the client certificate verifier")?;
    let mut config = ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS 1.2 and 1.3 are supported by the ring provider")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .context("the server certificate and key do not match")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// `HttpServer::on_connect` hook: record the verified client certificate, once per connection.
pub fn record_peer_certificate(connection: &dyn Any, extensions: &mut Extensions) {
    let Some(stream) = connection.downcast_ref::<TlsStream<TcpStream>>() else { return };
    let (_, session) = stream.get_ref();
    // The first certificate is the client's own; the rest is its chain.
    let Some(end_entity) = session.peer_certificates().and_then(|chain| chain.first()) else { return };
    let subject_common_name = x509_parser::parse_x509_certificate(end_entity.as_ref())
        .ok()
        .and_then(|(_, certificate)| certificate.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_owned));
    extensions.insert(PeerCertificate { fingerprint: fingerprint(end_entity.as_ref()), subject_common_name });
}
