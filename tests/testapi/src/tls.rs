//! The server's TLS: a CA and a serving certificate for 127.0.0.1 and localhost, made
//! fresh for each server. Clients trust the CA from the kubeconfig, as with any cluster;
//! kubectl and Helm send credentials only over TLS.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub struct ServerTls {
    /// The CA certificate (PEM) clients trust.
    pub ca_pem: String,
    /// The same, DER-encoded.
    pub ca_der: Vec<u8>,
    pub config: Arc<rustls::ServerConfig>,
}

fn err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("TLS set-up: {e}"))
}

impl ServerTls {
    pub fn generate() -> std::io::Result<Self> {
        let ca_key = KeyPair::generate().map_err(err)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        ca.distinguished_name
            .push(DnType::CommonName, "kelp-testapi-ca");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
        let issuer = rcgen::Issuer::new(ca, ca_key);

        let key = KeyPair::generate().map_err(err)?;
        let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).map_err(err)?;
        leaf.distinguished_name
            .push(DnType::CommonName, "kelp-testapi");
        leaf.subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        leaf.subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
        let cert = leaf.signed_by(&key, &issuer).map_err(err)?;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(err)?
            .with_no_client_auth()
            .with_single_cert(
                vec![
                    CertificateDer::from(cert.der().to_vec()),
                    CertificateDer::from(ca_cert.der().to_vec()),
                ],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .map_err(err)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            ca_pem: ca_cert.pem(),
            ca_der: ca_cert.der().to_vec(),
            config: Arc::new(config),
        })
    }
}
