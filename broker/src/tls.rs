//! TLS for the AMQPS listener (RabbitMQ's 5671): the server certificate, peer verification
//! (`verify_peer`, `fail_if_no_peer_cert`), and the login name a verified client certificate
//! gives the `EXTERNAL` mechanism (RabbitMQ's `ssl_cert_login_from`).
//!
//! rustls does the protocol (through tokio-rustls); this file only turns RabbitMQ's options into
//! a rustls server configuration and formats certificate subjects the way RabbitMQ does
//! (`rabbit_cert_info:subject/1`), so a user named after a certificate logs in to both brokers.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use x509_parser::prelude::{FromDer, X509Certificate};

/// How long a client has to finish the TLS handshake (RabbitMQ's `ssl_handshake_timeout`, 5 s);
/// the AMQP handshake timeout starts after it.
pub(crate) const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Which part of a client certificate names the user who logs in with `EXTERNAL`
/// (RabbitMQ's `ssl_cert_login_from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CertLoginFrom {
    /// The whole subject as an RFC 4514 string, most specific part first, e.g.
    /// `CN=app,O=Example,C=DE` (RabbitMQ's default, `distinguished_name`).
    #[default]
    DistinguishedName,
    /// The subject's common name(s), e.g. `app` (`common_name`); several are joined by `,`.
    CommonName,
}

/// The AMQPS listener's TLS settings, as RabbitMQ's `ssl_options`.
///
/// ```no_run
/// # fn run() -> Result<(), warren_broker::BrokerError> {
/// use warren_broker::TlsConfig;
/// let tls = TlsConfig::from_files("server.pem", "server.key")?
///     .ca_file("ca.pem")?
///     .verify_peer(true)              // ask for a client certificate, verify it against the CA
///     .fail_if_no_peer_cert(true);    // and refuse clients without one
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TlsConfig {
    cert_chain: Vec<u8>,
    key: Vec<u8>,
    ca: Option<Vec<u8>>,
    verify_peer: bool,
    fail_if_no_peer_cert: bool,
    login_from: CertLoginFrom,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("TlsConfig")
            .field("ca", &self.ca.is_some())
            .field("verify_peer", &self.verify_peer)
            .field("fail_if_no_peer_cert", &self.fail_if_no_peer_cert)
            .field("login_from", &self.login_from)
            .finish_non_exhaustive()
    }
}

/// Why a TLS configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("TLS: {0}")]
pub struct TlsError(String);

impl TlsConfig {
    /// The server's certificate chain (PEM, the server's own certificate first) and its private
    /// key (PEM: PKCS#8, PKCS#1 or SEC1). Peers are not asked for certificates until
    /// [`TlsConfig::verify_peer`].
    pub fn new(cert_chain_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        TlsConfig {
            cert_chain: cert_chain_pem.into(),
            key: key_pem.into(),
            ca: None,
            verify_peer: false,
            fail_if_no_peer_cert: false,
            login_from: CertLoginFrom::default(),
        }
    }

    /// [`TlsConfig::new`] with the PEM read from two files.
    pub fn from_files(
        cert_chain: impl AsRef<std::path::Path>,
        key: impl AsRef<std::path::Path>,
    ) -> Result<Self, TlsError> {
        Ok(Self::new(read(cert_chain.as_ref())?, read(key.as_ref())?))
    }

    /// The certificate authorities (PEM) that client certificates must chain to
    /// (RabbitMQ's `cacertfile`).
    pub fn ca(mut self, ca_pem: impl Into<Vec<u8>>) -> Self {
        self.ca = Some(ca_pem.into());
        self
    }

    /// [`TlsConfig::ca`] read from a file.
    pub fn ca_file(self, path: impl AsRef<std::path::Path>) -> Result<Self, TlsError> {
        Ok(self.ca(read(path.as_ref())?))
    }

    /// Ask clients for a certificate and verify any they present against the CA
    /// (`verify_peer`); needs [`TlsConfig::ca`]. Verified peers may log in with `EXTERNAL`.
    pub fn verify_peer(mut self, on: bool) -> Self {
        self.verify_peer = on;
        self
    }

    /// With [`TlsConfig::verify_peer`]: refuse the TLS handshake of a client that presents no
    /// certificate (`fail_if_no_peer_cert`).
    pub fn fail_if_no_peer_cert(mut self, on: bool) -> Self {
        self.fail_if_no_peer_cert = on;
        self
    }

    /// Which part of the certificate names the `EXTERNAL` user (default: the distinguished
    /// name, as RabbitMQ).
    pub fn cert_login_from(mut self, from: CertLoginFrom) -> Self {
        self.login_from = from;
        self
    }

    /// The acceptor for the AMQPS listener, or why these settings cannot work.
    pub(crate) fn acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        Ok(TlsAcceptor::from(Arc::new(self.server_config(&[])?)))
    }

    /// The acceptor for an HTTPS listener (management, Prometheus): the same settings, with
    /// ALPN offering HTTP/1.1, the only HTTP version those listeners speak.
    pub(crate) fn http_acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        Ok(TlsAcceptor::from(Arc::new(
            self.server_config(&[b"http/1.1"])?,
        )))
    }

    /// The rustls configuration of these settings, with these ALPN protocols.
    fn server_config(&self, alpn: &[&[u8]]) -> Result<rustls::ServerConfig, TlsError> {
        let certs = CertificateDer::pem_slice_iter(&self.cert_chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError(format!("certificate chain: {e}")))?;
        if certs.is_empty() {
            return Err(TlsError("certificate chain: no certificate in PEM".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(&self.key)
            .map_err(|e| TlsError(format!("private key: {e}")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(e.to_string()))?;
        let builder = if self.verify_peer {
            let ca = self.ca.as_deref().ok_or_else(|| {
                TlsError("verify_peer needs the CA certificates (--tls-ca)".into())
            })?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca) {
                let cert = cert.map_err(|e| TlsError(format!("CA certificates: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| TlsError(format!("CA certificate: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if self.fail_if_no_peer_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError(format!("CA certificates: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| TlsError(format!("certificate and key: {e}")))?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }

    /// Whether peers are verified, so `EXTERNAL` is offered.
    pub(crate) fn verifies_peers(&self) -> bool {
        self.verify_peer
    }

    pub(crate) fn login_from(&self) -> CertLoginFrom {
        self.login_from
    }
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError(format!("cannot read {}: {e}", path.display())))
}

/// What TLS told us about a connection's peer, for the AMQP handshake.
#[derive(Debug, Clone)]
pub(crate) struct TlsPeer {
    /// Whether the listener offers `EXTERNAL`.
    pub(crate) external: bool,
    /// The login name of the verified client certificate, or why there is none (RabbitMQ's
    /// refusal reasons, logged).
    pub(crate) cert_name: Result<String, &'static str>,
}

/// Accepts TLS on a freshly accepted socket, within [`TLS_HANDSHAKE_TIMEOUT`]; `None` when the
/// handshake failed (logged at debug, as a refused certificate is the client's problem).
pub(crate) async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    acceptor: &TlsAcceptor,
    config: &TlsConfig,
    stream: S,
    peer: std::net::SocketAddr,
) -> Option<(tokio_rustls::server::TlsStream<S>, TlsPeer)> {
    let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return None;
        }
    };
    let cert_name = match stream.get_ref().1.peer_certificates() {
        Some([cert, ..]) => login_name(cert, config.login_from()),
        _ => Err("connection peer presented no TLS (x.509) certificate"),
    };
    let external = config.verifies_peers();
    Some((
        stream,
        TlsPeer {
            external,
            cert_name,
        },
    ))
}

/// The user a (verified) certificate logs in as, as RabbitMQ's `rabbit_ssl:peer_cert_auth_name`.
pub(crate) fn login_name(der: &[u8], from: CertLoginFrom) -> Result<String, &'static str> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| "no name found")?;
    let subject = cert.subject();
    match from {
        CertLoginFrom::DistinguishedName => Ok(format_subject(subject)),
        CertLoginFrom::CommonName => {
            let cns: Vec<String> = subject
                .iter_common_name()
                .map(|a| attribute_text(a.attr_value()))
                .collect();
            if cns.is_empty() {
                Err("no name found")
            } else {
                Ok(cns.join(","))
            }
        }
    }
}

/// An RFC 4514 subject string as RabbitMQ writes it: RDNs most specific first, joined by `,`;
/// multi-valued RDNs joined by `+`; RabbitMQ's short names, else the dotted OID.
fn format_subject(name: &x509_parser::x509::X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let oid = atv.attr_type().to_id_string();
                    let key = short_name(&oid).map_or(oid.clone(), str::to_owned);
                    format!("{key}={}", escape_value(&attribute_text(atv.attr_value())))
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// RabbitMQ's names for subject attributes (`rabbit_cert_info:format_rdn/1`).
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.4" => "SN",
        "2.5.4.42" => "GIVENNAME",
        "2.5.4.43" => "INITIALS",
        "2.5.4.44" => "GENERATIONQUALIFIER",
        "2.5.4.3" => "CN",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "TITLE",
        "2.5.4.6" => "C",
        "2.5.4.5" => "SERIALNUMBER",
        "2.5.4.65" => "PSEUDONYM",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.2.840.113549.1.9.1" => "EMAILADDRESS",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// The text of a directory string (UTF-8, printable, IA5, teletex as Latin-1, BMP as UCS-2).
fn attribute_text(value: &x509_parser::der_parser::asn1_rs::Any<'_>) -> String {
    use x509_parser::der_parser::asn1_rs::Tag;
    let data = value.data;
    match value.tag() {
        Tag::BmpString => {
            let units: Vec<u16> = data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        Tag::TeletexString => data.iter().map(|&b| b as char).collect(),
        _ => String::from_utf8_lossy(data).into_owned(),
    }
}

/// RFC 4514 escaping as RabbitMQ does it (`escape_rdn_value`): a leading space or `#`, a
/// trailing space, the specials `"+,;<>\`, and every byte below 32 or from 126 up as `\XX`.
fn escape_value(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = String::with_capacity(value.len());
    for (i, &b) in bytes.iter().enumerate() {
        let first = i == 0;
        let last = i + 1 == bytes.len();
        match b {
            b' ' | b'#' if first => {
                out.push('\\');
                out.push(b as char);
            }
            b' ' if last => out.push_str("\\ "),
            b'"' | b'+' | b',' | b';' | b'<' | b'>' | b'\\' => {
                out.push('\\');
                out.push(b as char);
            }
            b if !(32..126).contains(&b) => out.push_str(&format!("\\{b:02X}")),
            b => out.push(b as char),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(dn: &[(rcgen::DnType, &str)]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (k, v) in dn {
            params.distinguished_name.push(k.clone(), *v);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn distinguished_name_is_most_specific_first_as_rabbitmq_writes_it() {
        let der = cert(&[
            (rcgen::DnType::CountryName, "DE"),
            (rcgen::DnType::OrganizationName, "Example, Inc"),
            (rcgen::DnType::CommonName, "app"),
        ]);
        assert_eq!(
            login_name(&der, CertLoginFrom::DistinguishedName).unwrap(),
            "CN=app,O=Example\\, Inc,C=DE"
        );
        assert_eq!(login_name(&der, CertLoginFrom::CommonName).unwrap(), "app");
    }

    #[test]
    fn a_subject_without_common_name_has_no_cn_login() {
        let der = cert(&[(rcgen::DnType::OrganizationName, "O")]);
        assert_eq!(
            login_name(&der, CertLoginFrom::CommonName),
            Err("no name found")
        );
        assert_eq!(
            login_name(b"not a certificate", CertLoginFrom::DistinguishedName),
            Err("no name found")
        );
    }

    #[test]
    fn values_are_escaped_as_rfc_4514() {
        assert_eq!(escape_value(" a+b "), "\\ a\\+b\\ ");
        assert_eq!(escape_value("#x"), "\\#x");
        assert_eq!(escape_value("é"), "\\C3\\A9");
    }

    #[test]
    fn verify_peer_without_a_ca_is_refused() {
        let key = rcgen::KeyPair::generate().unwrap();
        let c = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let config = TlsConfig::new(c.pem(), key.serialize_pem());
        assert!(config.acceptor().is_ok());
        let err = config.verify_peer(true).acceptor().err().unwrap();
        assert!(err.to_string().contains("--tls-ca"), "{err}");
        let err = TlsConfig::new("junk", "junk").acceptor().err().unwrap();
        assert!(err.to_string().contains("certificate chain"), "{err}");
    }
}
