//! The cluster CA, join token and admin kubeconfig for `kubernetes: Provision`.
//!
//! kelp generates them itself and hands them to the k3s server through cloud-init, so it
//! never has to log in to a machine to fetch credentials (as Cluster API does with kubeadm).

use rand::Rng;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// What kelp keeps in the Cluster's CA Secret.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterPki {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    /// The k3s join token (`K3S_TOKEN`).
    pub token: String,
    /// Admin client certificate (O=system:masters) signed by the CA.
    pub admin_cert_pem: String,
    pub admin_key_pem: String,
}

impl ClusterPki {
    /// A fresh CA (10 years), admin client certificate and join token.
    pub fn generate(cluster_name: &str) -> Result<Self, rcgen::Error> {
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::default();
        ca.distinguished_name = name(&format!("kelp-{cluster_name}-ca"), None);
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca.not_before = rcgen::date_time_ymd(2024, 1, 1);
        ca.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let ca_cert = ca.self_signed(&ca_key)?;

        let admin_key = KeyPair::generate()?;
        let mut admin = CertificateParams::default();
        admin.distinguished_name = name("kelp-admin", Some("system:masters"));
        admin.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        admin.not_before = ca.not_before;
        admin.not_after = ca.not_after;
        let issuer = Issuer::new(ca, &ca_key);
        let admin_cert = admin.signed_by(&admin_key, &issuer)?;

        let token: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(48)
            .map(char::from)
            .collect();
        Ok(Self {
            ca_cert_pem: ca_cert.pem(),
            ca_key_pem: ca_key.serialize_pem(),
            token,
            admin_cert_pem: admin_cert.pem(),
            admin_key_pem: admin_key.serialize_pem(),
        })
    }
}

fn name(common: &str, org: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common);
    if let Some(org) = org {
        dn.push(DnType::OrganizationName, org);
    }
    dn
}

/// An admin kubeconfig for `server`: a client certificate when given, else no credentials
/// (the sim control plane accepts anyone).
/// How a kubeconfig's user authenticates.
#[derive(Clone, Copy, Debug)]
pub enum Credentials<'a> {
    /// A client certificate and key (PEM), as kelp's provisioned clusters use.
    ClientCert(&'a str, &'a str),
    /// A bearer token, as the sim's control planes take.
    Token(&'a str),
}

pub fn kubeconfig(
    cluster_name: &str,
    server: &str,
    ca_cert_pem: Option<&str>,
    client: Credentials<'_>,
) -> String {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut cluster = serde_json::json!({"server": server});
    if let Some(ca) = ca_cert_pem {
        cluster["certificate-authority-data"] = b64(ca).into();
    }
    let user = match client {
        Credentials::ClientCert(cert, key) => {
            serde_json::json!({"client-certificate-data": b64(cert), "client-key-data": b64(key)})
        }
        Credentials::Token(token) => serde_json::json!({"token": token}),
    };
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": cluster}],
        "users": [{"name": "kelp-admin", "user": user}],
        "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": "kelp-admin"}}],
        "current-context": cluster_name,
    });
    serde_yaml_ng::to_string(&config).expect("kubeconfig serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_a_ca_an_admin_cert_and_a_token() {
        let pki = ClusterPki::generate("ifca-gpu").unwrap();
        assert!(pki.ca_cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(pki.ca_key_pem.contains("PRIVATE KEY"));
        assert!(
            pki.admin_cert_pem
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
        assert_eq!(pki.token.len(), 48);
        let other = ClusterPki::generate("ifca-gpu").unwrap();
        assert_ne!(pki.token, other.token, "every cluster gets its own token");
        assert_ne!(pki.ca_key_pem, other.ca_key_pem);
    }

    #[test]
    fn kubeconfig_loads_with_the_kube_client() {
        let pki = ClusterPki::generate("c").unwrap();
        let text = kubeconfig(
            "c",
            "https://203.0.113.7:6443",
            Some(&pki.ca_cert_pem),
            Credentials::ClientCert(&pki.admin_cert_pem, &pki.admin_key_pem),
        );
        let kc = kube::config::Kubeconfig::from_yaml(&text).unwrap();
        assert_eq!(kc.current_context.as_deref(), Some("c"));
        let cluster = kc.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://203.0.113.7:6443"));
        assert!(cluster.certificate_authority_data.is_some());
    }
}
