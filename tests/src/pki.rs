//! Certificates made at test time (rcgen), so no private key lives in the repository: a CA,
//! a server certificate for `localhost` / 127.0.0.1, and client certificates by subject. Each
//! [`Pki`] also writes its files to a fresh directory for programs that take paths (pika, the
//! calculator examples, the broker binary).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct CertPem {
    /// The certificate.
    pub cert: String,
    /// The private key (PKCS#8).
    pub key: String,
}

/// A test certificate authority with a server certificate, and files for both under
/// [`Pki::dir`].
pub struct Pki {
    ca: rcgen::Certificate,
    ca_key: KeyPair,
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// The server's certificate (for `localhost` and 127.0.0.1) and key.
    pub server: CertPem,
    dir: PathBuf,
}

impl Pki {
    /// A new CA named `name` and a server certificate signed by it; files in a fresh temporary
    /// directory: `ca.pem`, `server.pem`, `server.key`.
    pub fn new(name: &str) -> Pki {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name = dn(&[(DnType::CommonName, name)]);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = params.self_signed(&ca_key).expect("CA certificate");
        let ca_pem = ca.pem();
        let dir = std::env::temp_dir().join(crate::unique("warren-pki"));
        std::fs::create_dir_all(&dir).expect("pki dir");
        let mut pki = Pki {
            ca,
            ca_key,
            ca_pem,
            server: CertPem {
                cert: String::new(),
                key: String::new(),
            },
            dir,
        };
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("server params");
        params.distinguished_name = dn(&[(DnType::CommonName, "localhost")]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        pki.server = pki.sign(params);
        pki.write("ca.pem", &pki.ca_pem.clone());
        pki.write("server.pem", &pki.server.cert.clone());
        pki.write("server.key", &pki.server.key.clone());
        pki
    }

    /// A client certificate signed by this CA, with this subject (most general first, as
    /// written: e.g. `[(O, "Warren"), (CN, "app")]`); also written as `FILE.pem` / `FILE.key`.
    pub fn client(&self, file: &str, subject: &[(DnType, &str)]) -> CertPem {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params.distinguished_name = dn(subject);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let pem = self.sign(params);
        self.write(&format!("{file}.pem"), &pem.cert);
        self.write(&format!("{file}.key"), &pem.key);
        pem
    }

    /// Where the files are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A file of this PKI, by name.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    fn sign(&self, params: CertificateParams) -> CertPem {
        let key = KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("sign certificate");
        CertPem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn write(&self, file: &str, contents: &str) {
        std::fs::write(self.dir.join(file), contents).expect("write pki file");
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn dn(parts: &[(DnType, &str)]) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    for (kind, value) in parts {
        name.push(kind.clone(), *value);
    }
    name
}
