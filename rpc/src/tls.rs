//! TLS for `amqps://` URLs: which certificate authorities to trust besides the system's, and
//! the client certificate to present (for brokers that require one, or to log in with the
//! `EXTERNAL` mechanism: add `?auth_mechanism=external` to the URL).
//!
//! lapin does the TLS (rustls, with the system's root certificates); this only carries the
//! extra settings to every connection a client or server makes, reconnections included.

use std::path::Path;

use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};

use crate::error::Error;

/// TLS settings for `amqps://` brokers, given to
/// [`ClientBuilder::tls`](crate::ClientBuilder::tls) or
/// [`ServerBuilder::tls`](crate::ServerBuilder::tls). Without them an `amqps://` URL trusts the
/// system's root certificates and presents no client certificate; `amqp://` URLs ignore them.
///
/// ```no_run
/// # async fn run() -> Result<(), warren_rpc::Error> {
/// let tls = warren_rpc::Tls::new()
///     .ca_file("ca.pem")?                            // a private CA, e.g. a test broker's
///     .client_cert_files("client.pem", "client.key")?; // PEM certificate and key
/// let client = warren_rpc::Client::builder()
///     .tls(tls)
///     .connect("amqps://app:secret@broker.example:5671/%2f")
///     .await?;
/// # drop(client); Ok(()) }
/// ```
#[derive(Clone, Default, PartialEq)]
pub struct Tls {
    config: OwnedTLSConfig,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key or the PKCS#12 password.
        f.debug_struct("Tls")
            .field("custom_ca", &self.config.cert_chain.is_some())
            .field("client_certificate", &self.config.identity.is_some())
            .finish()
    }
}

impl Tls {
    /// The system's trusted roots, no client certificate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also trusts these CA certificates (PEM, one or more).
    pub fn ca_pem(mut self, pem: impl Into<String>) -> Self {
        self.config.cert_chain = Some(pem.into());
        self
    }

    /// [`Tls::ca_pem`] read from a file.
    pub fn ca_file(self, path: impl AsRef<Path>) -> Result<Self, Error> {
        let pem = String::from_utf8(read(path.as_ref())?).map_err(|_| Error::Config {
            reason: format!("CA file {} is not PEM text", path.as_ref().display()),
        })?;
        Ok(self.ca_pem(pem))
    }

    /// Presents this client certificate: the certificate (PEM, chain allowed) and its private
    /// key (PEM, unencrypted: PKCS#8, PKCS#1 or SEC1).
    pub fn client_cert_pem(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.config.identity = Some(OwnedIdentity::PKCS8 {
            pem: cert_pem.into(),
            key: key_pem.into(),
        });
        self
    }

    /// [`Tls::client_cert_pem`] read from two files.
    pub fn client_cert_files(
        self,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, Error> {
        Ok(self.client_cert_pem(read(cert.as_ref())?, read(key.as_ref())?))
    }

    /// Presents the client certificate and key of a PKCS#12 bundle (DER), unlocked with
    /// `password`.
    pub fn client_pkcs12(mut self, der: impl Into<Vec<u8>>, password: impl Into<String>) -> Self {
        self.config.identity = Some(OwnedIdentity::PKCS12 {
            der: der.into(),
            password: password.into(),
        });
        self
    }

    /// [`Tls::client_pkcs12`] read from a file.
    pub fn client_pkcs12_file(
        self,
        path: impl AsRef<Path>,
        password: impl Into<String>,
    ) -> Result<Self, Error> {
        Ok(self.client_pkcs12(read(path.as_ref())?, password))
    }

    /// lapin's configuration, for each connection.
    pub(crate) fn lapin(&self) -> OwnedTLSConfig {
        self.config.clone()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::Config {
        reason: format!("cannot read {}: {e}", path.display()),
    })
}
