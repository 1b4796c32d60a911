//! TLS for every connection the client opens (PD members, TSO and router servers, TiKV stores),
//! built once from the [`TlsMaterial`] that [`Security`](crate::Security) loads.
//!
//! Who calls it: `pd::conn` (PD-side channels) and `transport` (store channels) turn the
//! material into a [`ClientTls`] and [`ClientTls::apply`] it to each tonic endpoint; `pd::conn`
//! also builds [`http_config`] for PD's HTTP API, with the same checks.
//!
//! What a server must show: a certificate chain to one of the configured CAs, valid for the
//! host the client dials (rustls' WebPKI checks, as Go's `crypto/tls` does in client-go), and,
//! when `cluster-verify-cn` lists names, a leaf certificate whose subject Common Name is one of
//! them. client-go carries the list without applying it on its client side (TiDB applies it to
//! the clients of its own servers); applying it here lets a deployment pin which certificates
//! the client trusts among everything the CA signed, as TiKV's `cert-allowed-cn` does for the
//! connections TiKV accepts. The name check runs after the chain and host checks pass, so the
//! certificate it reads is already known to be well-formed.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::config::TlsMaterial;
use crate::{Error, Result};

/// Client TLS settings ready to apply to endpoints: tonic's settings, and the verifier that
/// adds the Common Name check when names are configured. [`http_config`] builds the matching
/// rustls configuration for the HTTP/1.1 calls the client makes itself (PD's HTTP API).
#[derive(Clone)]
pub(crate) struct ClientTls {
    config: ClientTlsConfig,
    verifier: Option<Arc<dyn ServerCertVerifier>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("config", &self.config)
            .field("verify_cn", &self.verifier.is_some())
            .finish()
    }
}

impl ClientTls {
    /// Settings from loaded material: its CAs, its client identity for mutual TLS, and its
    /// Common Name list.
    pub(crate) fn from_material(material: &TlsMaterial) -> Result<Self> {
        let mut config = ClientTlsConfig::new();
        if let Some((cert, key)) = material.client_identity() {
            config = config.identity(Identity::from_pem(cert, key));
        }
        if material.verify_cn().is_empty() {
            let config = config.ca_certificate(Certificate::from_pem(material.ca_pem()));
            return Ok(ClientTls {
                config,
                verifier: None,
            });
        }
        // tonic refuses CA roots next to a custom verifier: the roots go into the verifier.
        let verifier = AllowedCnVerifier::new(material.ca_pem(), material.verify_cn())?;
        Ok(ClientTls {
            config,
            verifier: Some(Arc::new(verifier)),
        })
    }

    /// Settings that trust the system's roots (PD URLs given as `https://` without a CA).
    pub(crate) fn native_roots() -> Self {
        ClientTls {
            config: ClientTlsConfig::new().with_native_roots(),
            verifier: None,
        }
    }

    /// Lets the connection speak HTTP/2 even when the server negotiates no ALPN protocol.
    pub(crate) fn assume_http2(mut self) -> Self {
        self.config = self.config.assume_http2(true);
        self
    }

    /// `endpoint` with these settings; `what` names the peer in the error.
    pub(crate) fn apply(&self, endpoint: Endpoint, what: &str) -> Result<Endpoint> {
        let applied = match &self.verifier {
            None => endpoint.tls_config(self.config.clone()),
            Some(verifier) => {
                endpoint.tls_config_with_verifier(self.config.clone(), verifier.clone())
            }
        };
        applied.map_err(|e| {
            Error::config(format!(
                "security: cannot use the TLS settings for {what}: {}",
                error_chain(&e)
            ))
        })
    }
}

/// The crypto provider tonic would use for its handshakes.
fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// A rustls client configuration from the material, checking servers as the gRPC connections
/// do (CA, host, Common Names) and presenting the client identity, speaking HTTP/1.1.
pub(crate) fn http_config(material: &TlsMaterial) -> Result<Arc<rustls::ClientConfig>> {
    let verifier: Arc<dyn ServerCertVerifier> = if material.verify_cn().is_empty() {
        webpki_verifier(material.ca_pem())?
    } else {
        Arc::new(AllowedCnVerifier::new(
            material.ca_pem(),
            material.verify_cn(),
        )?)
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config(format!("security: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match material.client_identity() {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::config(format!("security.cluster-ssl-cert: {e}")))?;
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key)
                .map_err(|e| Error::config(format!("security.cluster-ssl-key: {e}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| Error::config(format!("security: client identity: {e}")))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// WebPKI verification (chain and host) against the CAs in `ca_pem`.
fn webpki_verifier(ca_pem: &[u8]) -> Result<Arc<WebPkiServerVerifier>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| {
            Error::config(format!(
                "security.cluster-ssl-ca: unreadable certificate: {e}"
            ))
        })?;
        roots.add(cert).map_err(|e| {
            Error::config(format!(
                "security.cluster-ssl-ca: unusable CA certificate: {e}"
            ))
        })?;
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| Error::config(format!("security.cluster-ssl-ca: {e}")))
}

/// An error and its sources on one line (tonic's top-level message says little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// WebPKI verification against the configured CAs, then the Common Name check.
#[derive(Debug)]
struct AllowedCnVerifier {
    inner: Arc<WebPkiServerVerifier>,
    allowed: Vec<String>,
}

/// Why a server certificate was refused by the Common Name check.
#[derive(Debug)]
struct CommonNameNotAllowed {
    found: Option<String>,
    allowed: Vec<String>,
}

impl std::fmt::Display for CommonNameNotAllowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.found {
            Some(cn) => write!(
                f,
                "server certificate Common Name {cn:?} is not in security.cluster-verify-cn {:?}",
                self.allowed
            ),
            None => write!(
                f,
                "server certificate has no Common Name; security.cluster-verify-cn requires one \
                 of {:?}",
                self.allowed
            ),
        }
    }
}

impl std::error::Error for CommonNameNotAllowed {}

impl AllowedCnVerifier {
    fn new(ca_pem: &[u8], allowed: &[String]) -> Result<Self> {
        Ok(AllowedCnVerifier {
            inner: webpki_verifier(ca_pem)?,
            allowed: allowed.to_vec(),
        })
    }
}

impl ServerCertVerifier for AllowedCnVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let found = common_name(end_entity.as_ref());
        if found
            .as_ref()
            .is_some_and(|cn| self.allowed.iter().any(|a| a == cn))
        {
            return Ok(verified);
        }
        let refusal = CommonNameNotAllowed {
            found,
            allowed: self.allowed.clone(),
        };
        tracing::warn!(%refusal, "TLS handshake refused");
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(refusal)),
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

// ----- reading the subject Common Name out of a DER certificate -------------------------------

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const INTEGER: u8 = 0x02;
/// `[0] EXPLICIT Version` in a TBSCertificate.
const VERSION_TAG: u8 = 0xa0;
/// id-at-commonName, 2.5.4.3.
const CN_OID: [u8; 3] = [0x55, 0x04, 0x03];
const UTF8_STRING: u8 = 0x0c;
const PRINTABLE_STRING: u8 = 0x13;
const TELETEX_STRING: u8 = 0x14;
const IA5_STRING: u8 = 0x16;
const BMP_STRING: u8 = 0x1e;

/// One DER element off the front of `input`: its tag, its contents and what follows it.
/// `None` for anything malformed (indefinite or oversized lengths, truncation).
fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The contents of the element at the front of `input` if it has tag `tag`, and what follows.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, contents, rest) = read_tlv(input)?;
    (t == tag).then_some((contents, rest))
}

/// The subject Common Name of a DER certificate (the last one when the subject has several,
/// as Go's `pkix.Name` keeps), or `None` when it has none or cannot be read.
fn common_name(cert: &[u8]) -> Option<String> {
    let (certificate, _) = expect(cert, SEQUENCE)?;
    let (tbs, _) = expect(certificate, SEQUENCE)?;
    let mut rest = tbs;
    if let Some((_, after)) = expect(rest, VERSION_TAG) {
        rest = after;
    }
    let (_serial, rest) = expect(rest, INTEGER)?;
    let (_signature, rest) = expect(rest, SEQUENCE)?;
    let (_issuer, rest) = expect(rest, SEQUENCE)?;
    let (_validity, rest) = expect(rest, SEQUENCE)?;
    let (mut subject, _) = expect(rest, SEQUENCE)?;
    let mut found = None;
    while !subject.is_empty() {
        let (mut rdn, after) = expect(subject, SET)?;
        subject = after;
        while !rdn.is_empty() {
            let (attribute, after) = expect(rdn, SEQUENCE)?;
            rdn = after;
            let (oid, value) = expect(attribute, OID)?;
            if oid == CN_OID {
                let (tag, text, _) = read_tlv(value)?;
                found = decode_string(tag, text).or(found);
            }
        }
    }
    found
}

/// A directory string's text; `None` for other types or bytes that are not text.
fn decode_string(tag: u8, bytes: &[u8]) -> Option<String> {
    match tag {
        UTF8_STRING | PRINTABLE_STRING | TELETEX_STRING | IA5_STRING => {
            std::str::from_utf8(bytes).ok().map(str::to_owned)
        }
        BMP_STRING if bytes.len().is_multiple_of(2) => {
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/transport/testdata")
            .join(name);
        std::fs::read(path).unwrap()
    }

    fn der(name: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(&testdata(name))
            .unwrap()
            .as_ref()
            .to_vec()
    }

    #[test]
    fn common_names_are_read_from_test_certificates() {
        assert_eq!(
            common_name(&der("server.pem")).as_deref(),
            Some("tikv-server")
        );
        assert_eq!(
            common_name(&der("client.pem")).as_deref(),
            Some("tikv-client")
        );
        assert_eq!(
            common_name(&der("ca.pem")).as_deref(),
            Some("tikv-client transport test CA")
        );
    }

    #[test]
    fn malformed_certificates_have_no_common_name() {
        let cert = der("server.pem");
        // Every truncation is refused without a panic.
        for len in 0..cert.len() {
            assert_eq!(common_name(&cert[..len]), None, "truncated to {len}");
        }
        assert_eq!(common_name(&[0x30, 0x80, 0x00, 0x00]), None);
        assert_eq!(common_name(&[0x30, 0x85, 1, 1, 1, 1, 1]), None);
        assert_eq!(common_name(b"not a certificate"), None);
    }

    #[test]
    fn directory_strings_decode_by_type() {
        assert_eq!(decode_string(UTF8_STRING, b"pd").as_deref(), Some("pd"));
        assert_eq!(
            decode_string(PRINTABLE_STRING, b"pd").as_deref(),
            Some("pd")
        );
        assert_eq!(
            decode_string(BMP_STRING, &[0, b'p', 0, b'd']).as_deref(),
            Some("pd")
        );
        assert_eq!(decode_string(BMP_STRING, &[0, b'p', 0]), None);
        assert_eq!(decode_string(UTF8_STRING, &[0xff]), None);
        assert_eq!(decode_string(0x04, b"pd"), None);
    }

    #[test]
    fn an_unreadable_ca_is_a_config_error() {
        let err = AllowedCnVerifier::new(
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            &["x".to_owned()],
        )
        .unwrap_err();
        assert!(err.to_string().contains("cluster-ssl-ca"), "{err}");
    }
}
