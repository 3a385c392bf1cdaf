//! Certificates for the TLS tests, made with rcgen: a CA, node certificates naming a host
//! (IP or DNS subject alternative name), client certificates with a common name, and
//! expired ones. Everything is written as PEM files into a directory the test owns.

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// A certificate and its key, as files.
#[derive(Clone, Debug)]
pub struct CertFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

/// A throw-away certificate authority whose files live in `dir`.
pub struct TestCa {
    dir: PathBuf,
    name: String,
    issuer: Issuer<'static, KeyPair>,
    /// The CA's certificate (PEM file), what nodes and clients trust.
    pub ca: PathBuf,
}

impl TestCa {
    /// A new CA named `name`; writes `DIR/NAME-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        std::fs::create_dir_all(dir).expect("create the certificate directory");
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let certificate = params.self_signed(&key).expect("self-sign the CA");
        let ca = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca, certificate.pem()).expect("write the CA certificate");
        TestCa {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            issuer: Issuer::new(params, key),
            ca,
        }
    }

    /// A certificate for `common_name` naming `hosts` (IP addresses or DNS names), written
    /// as `DIR/NAME-FILE.pem` and `DIR/NAME-FILE-key.pem`; expired if `expired`.
    pub fn issue(&self, file: &str, common_name: &str, hosts: &[&str], expired: bool) -> CertFiles {
        let key = KeyPair::generate().expect("key");
        let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        let mut params = CertificateParams::new(hosts).expect("certificate params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        if expired {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2021, 1, 1);
        }
        let certificate = params.signed_by(&key, &self.issuer).expect("sign");
        let files = CertFiles {
            cert: self.dir.join(format!("{}-{file}.pem", self.name)),
            key: self.dir.join(format!("{}-{file}-key.pem", self.name)),
        };
        std::fs::write(&files.cert, certificate.pem()).expect("write certificate");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        files
    }

    /// Node `id`'s certificate, naming `host`.
    pub fn node(&self, id: u64, host: &str) -> CertFiles {
        self.issue(&format!("node{id}"), &format!("node{id}"), &[host], false)
    }

    /// A client certificate with common name `name` (no host).
    pub fn client(&self, name: &str) -> CertFiles {
        self.issue(&format!("client-{name}"), name, &[], false)
    }
}
