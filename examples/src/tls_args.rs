//! The TLS options the calculator programs share, for `amqps://` URLs: a CA to trust besides
//! the system's and a client certificate (PEM files, or a PKCS#12 bundle).

use warren_rpc::{Error, Tls};

/// `--tls-ca`, `--tls-cert` / `--tls-key`, `--tls-pkcs12` / `--tls-pkcs12-password`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// For amqps:// URLs: also trust the CA certificates in this PEM file.
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// For amqps:// URLs: present this client certificate (PEM; needs --tls-key).
    #[arg(
        long,
        value_name = "PEM",
        requires = "tls_key",
        conflicts_with = "tls_pkcs12"
    )]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM, unencrypted).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// For amqps:// URLs: present the client certificate of this PKCS#12 bundle.
    #[arg(long, value_name = "FILE")]
    pub tls_pkcs12: Option<std::path::PathBuf>,
    /// The PKCS#12 bundle's password.
    #[arg(long, default_value = "", requires = "tls_pkcs12")]
    pub tls_pkcs12_password: String,
}

impl TlsArgs {
    /// The settings for [`ClientBuilder::tls`](warren_rpc::ClientBuilder::tls) and
    /// [`ServerBuilder::tls`](warren_rpc::ServerBuilder::tls).
    pub fn tls(&self) -> Result<Tls, Error> {
        let mut tls = Tls::new();
        if let Some(ca) = &self.tls_ca {
            tls = tls.ca_file(ca)?;
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            tls = tls.client_cert_files(cert, key)?;
        }
        if let Some(p12) = &self.tls_pkcs12 {
            tls = tls.client_pkcs12_file(p12, self.tls_pkcs12_password.clone())?;
        }
        Ok(tls)
    }
}
