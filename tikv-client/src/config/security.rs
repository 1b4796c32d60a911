//! `[security]`: TLS settings for the connections to PD and TiKV. Ports client-go
//! `config/security.go` (`Security`, `NewSecurity`, and the file checks of `ToTLSConfig`).
//!
//! This module reads and checks the PEM files only; it builds no TLS configuration. The crate's
//! `tls` module turns a [`TlsMaterial`] into the TLS settings of every PD and TiKV connection
//! (CA roots, client identity, the Common Name check against [`TlsMaterial::verify_cn`]); the
//! TLS library matches a certificate against its private key there.

use std::fmt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize};

use crate::{Error, Result};

/// Where the TLS certificates for the cluster live (client-go `config.Security`, TOML table
/// `[security]`).
///
/// TLS is on when [`cluster_ssl_ca`](Self::cluster_ssl_ca) is set. With only the CA, the client
/// verifies the servers; with a certificate and key as well, it also presents itself (mutual
/// TLS). A certificate without its key, or either without a CA, is a configuration error (client-go
/// silently ignores such a half setting and connects without TLS).
///
/// ```no_run
/// use tikv_client::Security;
///
/// let security = Security::new(
///     "/etc/tikv/ca.pem",
///     "/etc/tikv/client.pem",
///     "/etc/tikv/client-key.pem",
///     ["tikv"],
/// );
/// let material = security.load()?; // reads and checks the three PEM files
/// # Ok::<(), tikv_client::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub struct Security {
    /// PEM file of the CA certificates that signed the cluster's certificates
    /// (`ClusterSSLCA`, TOML `cluster-ssl-ca`; an empty string means unset).
    #[serde(
        deserialize_with = "non_empty_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub cluster_ssl_ca: Option<PathBuf>,
    /// PEM file of this client's certificate chain (`ClusterSSLCert`, TOML `cluster-ssl-cert`).
    #[serde(
        deserialize_with = "non_empty_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub cluster_ssl_cert: Option<PathBuf>,
    /// PEM file of this client's private key (`ClusterSSLKey`, TOML `cluster-ssl-key`).
    #[serde(
        deserialize_with = "non_empty_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub cluster_ssl_key: Option<PathBuf>,
    /// Common Names a server certificate may carry; empty accepts any name the CA signed
    /// (`ClusterVerifyCN`, TOML `cluster-verify-cn`).
    ///
    /// client-go only carries this list (TiDB checks client certificates against it on its
    /// server side); this client applies it to the PD and TiKV certificates it connects to.
    pub cluster_verify_cn: Vec<String>,
}

impl Security {
    /// TLS settings from file paths, as client-go's `NewSecurity`. An empty path means "not
    /// set", so `Security::new("", "", "", None::<String>)` is TLS off.
    ///
    /// ```
    /// use tikv_client::Security;
    /// let tls = Security::new("ca.pem", "client.pem", "client-key.pem", ["tikv-server"]);
    /// assert!(tls.is_enabled());
    /// ```
    pub fn new(
        ca: impl Into<PathBuf>,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
        verify_cn: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        let path = |p: PathBuf| (!p.as_os_str().is_empty()).then_some(p);
        Security {
            cluster_ssl_ca: path(ca.into()),
            cluster_ssl_cert: path(cert.into()),
            cluster_ssl_key: path(key.into()),
            cluster_verify_cn: verify_cn.into_iter().map(Into::into).collect(),
        }
    }

    /// Sets the CA file; enough on its own for TLS that verifies the servers.
    ///
    /// ```
    /// use tikv_client::Security;
    /// assert!(Security::default().with_ca("ca.pem").is_enabled());
    /// ```
    pub fn with_ca(mut self, ca: impl Into<PathBuf>) -> Self {
        self.cluster_ssl_ca = Some(ca.into());
        self
    }

    /// Sets this client's certificate and private key files, for mutual TLS.
    ///
    /// ```
    /// use tikv_client::Security;
    /// let tls = Security::default().with_ca("ca.pem").with_client_identity("client.pem", "client-key.pem");
    /// ```
    pub fn with_client_identity(
        mut self,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Self {
        self.cluster_ssl_cert = Some(cert.into());
        self.cluster_ssl_key = Some(key.into());
        self
    }

    /// Sets the Common Names a server certificate may carry.
    ///
    /// ```
    /// use tikv_client::Security;
    /// let tls = Security::default().with_ca("ca.pem").with_verify_cn(["tikv-server"]);
    /// assert_eq!(tls.cluster_verify_cn, ["tikv-server"]);
    /// ```
    pub fn with_verify_cn(mut self, names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.cluster_verify_cn = names.into_iter().map(Into::into).collect();
        self
    }

    /// Whether the connections use TLS, that is whether a CA is set (as in client-go).
    ///
    /// ```
    /// use tikv_client::Security;
    /// assert!(!Security::default().is_enabled());
    /// ```
    pub fn is_enabled(&self) -> bool {
        self.cluster_ssl_ca.is_some()
    }

    /// Checks that the settings fit together, without touching the files.
    pub(crate) fn validate(&self) -> Result<()> {
        match (&self.cluster_ssl_cert, &self.cluster_ssl_key) {
            (Some(_), None) => {
                return Err(Error::config(
                    "security.cluster-ssl-key: not set, but cluster-ssl-cert is; a client \
                     certificate needs its private key",
                ));
            }
            (None, Some(_)) => {
                return Err(Error::config(
                    "security.cluster-ssl-cert: not set, but cluster-ssl-key is; a private key \
                     needs its certificate",
                ));
            }
            (Some(_), Some(_)) if self.cluster_ssl_ca.is_none() => {
                return Err(Error::config(
                    "security.cluster-ssl-ca: not set, but a client certificate and key are; \
                     TLS needs the CA that signed the cluster's certificates",
                ));
            }
            _ => {}
        }
        if self.cluster_verify_cn.iter().any(String::is_empty) {
            return Err(Error::config(
                "security.cluster-verify-cn: names must not be empty strings",
            ));
        }
        Ok(())
    }

    /// Reads the PEM files into memory and checks them: the CA and certificate files must hold
    /// at least one `CERTIFICATE` block, the key file an unencrypted `PRIVATE KEY` block (PKCS#8,
    /// or the traditional RSA or EC forms). Errors name the setting, the path and the problem.
    ///
    /// Call it when [`is_enabled`](Self::is_enabled) is true; without a CA it is an error.
    ///
    /// ```no_run
    /// use tikv_client::Security;
    /// let material = Security::default().with_ca("ca.pem").load()?;
    /// assert!(!material.ca_pem().is_empty());
    /// # Ok::<(), tikv_client::Error>(())
    /// ```
    pub fn load(&self) -> Result<TlsMaterial> {
        self.validate()?;
        let Some(ca_path) = &self.cluster_ssl_ca else {
            return Err(Error::config(
                "security.cluster-ssl-ca: not set; TLS needs the CA that signed the cluster's \
                 certificates",
            ));
        };
        let ca = read_pem("security.cluster-ssl-ca", ca_path, PemKind::Certificate)?;
        let identity = match (&self.cluster_ssl_cert, &self.cluster_ssl_key) {
            (Some(cert), Some(key)) => Some((
                read_pem("security.cluster-ssl-cert", cert, PemKind::Certificate)?,
                read_pem("security.cluster-ssl-key", key, PemKind::PrivateKey)?,
            )),
            _ => None,
        };
        Ok(TlsMaterial {
            ca,
            identity,
            verify_cn: self.cluster_verify_cn.clone(),
        })
    }
}

/// TLS files read into memory and checked by [`Security::load`]: what the transport needs to
/// configure TLS without touching the file system again. Cloning is cheap.
///
/// Its `Debug` output never shows the private key.
///
/// ```no_run
/// let material = tikv_client::Security::default().with_ca("ca.pem").load()?;
/// println!("{} CA bytes", material.ca_pem().len());
/// # Ok::<(), tikv_client::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct TlsMaterial {
    ca: Bytes,
    identity: Option<(Bytes, Bytes)>,
    verify_cn: Vec<String>,
}

impl TlsMaterial {
    /// The CA certificates (PEM) used to verify servers.
    ///
    /// ```no_run
    /// let material = tikv_client::Security::default().with_ca("ca.pem").load()?;
    /// let pem: &[u8] = material.ca_pem();
    /// # Ok::<(), tikv_client::Error>(())
    /// ```
    pub fn ca_pem(&self) -> &[u8] {
        &self.ca
    }

    /// This client's certificate chain and private key (both PEM), for mutual TLS.
    ///
    /// ```no_run
    /// let material = tikv_client::Security::default().with_ca("ca.pem").load()?;
    /// assert!(material.client_identity().is_none());
    /// # Ok::<(), tikv_client::Error>(())
    /// ```
    pub fn client_identity(&self) -> Option<(&[u8], &[u8])> {
        self.identity
            .as_ref()
            .map(|(cert, key)| (&cert[..], &key[..]))
    }

    /// Common Names a server certificate may carry; empty accepts any.
    ///
    /// ```no_run
    /// let material = tikv_client::Security::default().with_ca("ca.pem").load()?;
    /// assert!(material.verify_cn().is_empty());
    /// # Ok::<(), tikv_client::Error>(())
    /// ```
    pub fn verify_cn(&self) -> &[String] {
        &self.verify_cn
    }
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca_pem_bytes", &self.ca.len())
            .field(
                "client_cert_pem_bytes",
                &self.identity.as_ref().map(|(cert, _)| cert.len()),
            )
            .field("client_key", &self.identity.as_ref().map(|_| "<redacted>"))
            .field("verify_cn", &self.verify_cn)
            .finish()
    }
}

/// An empty string means "unset" in client-go's TOML, so it maps to `None`.
fn non_empty_path<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<PathBuf>, D::Error> {
    let path = Option::<PathBuf>::deserialize(d)?;
    Ok(path.filter(|p| !p.as_os_str().is_empty()))
}

#[derive(Clone, Copy)]
enum PemKind {
    Certificate,
    PrivateKey,
}

fn read_pem(field: &str, path: &Path, kind: PemKind) -> Result<Bytes> {
    let problem = |what: String| Error::config(format!("{field}: {}: {what}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| problem(format!("cannot read: {e}")))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        problem(
            "not PEM text (binary DER is not accepted; convert it with `openssl x509 -inform der` \
             or `openssl pkey -inform der`)"
                .to_owned(),
        )
    })?;
    let blocks = pem_blocks(text).map_err(problem)?;
    match kind {
        PemKind::Certificate => {
            if !blocks.iter().any(|b| b.label == "CERTIFICATE") {
                return Err(problem("no `-----BEGIN CERTIFICATE-----` block".to_owned()));
            }
        }
        PemKind::PrivateKey => {
            let keys = blocks.iter().filter(|b| b.label.ends_with("PRIVATE KEY"));
            let mut usable = keys.clone().filter(|b| !b.is_encrypted());
            if usable.next().is_none() {
                return Err(problem(if keys.count() > 0 {
                    "the private key is encrypted, which is not supported; decrypt it with \
                     `openssl pkey`"
                        .to_owned()
                } else {
                    "no private key block (`-----BEGIN PRIVATE KEY-----`, `RSA PRIVATE KEY` or \
                     `EC PRIVATE KEY`)"
                        .to_owned()
                }));
            }
        }
    }
    Ok(Bytes::from(bytes))
}

/// One `-----BEGIN <label>-----` … `-----END <label>-----` block of a PEM file.
#[derive(Debug)]
struct PemBlock {
    label: String,
    /// Traditional (OpenSSL) encrypted keys announce themselves in a header line.
    encrypted_header: bool,
}

impl PemBlock {
    fn is_encrypted(&self) -> bool {
        self.encrypted_header || self.label == "ENCRYPTED PRIVATE KEY"
    }
}

/// Finds the PEM blocks in `text` and checks their framing and base64 body; the DER inside is
/// not decoded (that is the TLS library's job).
fn pem_blocks(text: &str) -> std::result::Result<Vec<PemBlock>, String> {
    let mut blocks = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut encrypted_header = false;
        let mut body_len = 0;
        let mut closed = false;
        for line in lines.by_ref() {
            if line == end {
                closed = true;
                break;
            }
            if line.starts_with("-----") {
                return Err(format!(
                    "PEM block `{label}` ends with {line:?} instead of {end:?}"
                ));
            }
            if line.contains(':') {
                encrypted_header |= line.contains("ENCRYPTED");
                continue;
            }
            if !line
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
            {
                return Err(format!("PEM block `{label}` has a body that is not base64"));
            }
            body_len += line.len();
        }
        if !closed {
            return Err(format!("PEM block `{label}` is cut off: no {end:?} line"));
        }
        if body_len == 0 {
            return Err(format!("PEM block `{label}` is empty"));
        }
        blocks.push(PemBlock {
            label: label.to_owned(),
            encrypted_header,
        });
    }
    if blocks.is_empty() {
        return Err("no PEM block found (expected `-----BEGIN ...-----` lines)".to_owned());
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/config/testdata")
            .join(name)
    }

    fn load_err(security: Security) -> String {
        security.load().expect_err("load should fail").to_string()
    }

    // Ported from client-go config/security_test.go TestTLSConfig: the certificate file doubles
    // as the CA, with a certificate and key pair.
    #[test]
    fn loads_ca_cert_and_key() {
        let security = Security::new(
            testdata("client.pem"),
            testdata("client.pem"),
            testdata("client-key.pem"),
            None::<String>,
        );
        assert!(security.is_enabled());
        let material = security.load().unwrap();
        assert!(
            material
                .ca_pem()
                .starts_with(b"-----BEGIN CERTIFICATE-----")
        );
        let (cert, key) = material.client_identity().unwrap();
        assert!(cert.starts_with(b"-----BEGIN CERTIFICATE-----"));
        assert!(key.starts_with(b"-----BEGIN PRIVATE KEY-----"));
        assert!(material.verify_cn().is_empty());
    }

    #[test]
    fn ca_alone_verifies_servers_only() {
        let security = Security::default()
            .with_ca(testdata("ca.pem"))
            .with_verify_cn(["tikv"]);
        let material = security.load().unwrap();
        assert!(material.client_identity().is_none());
        assert_eq!(material.verify_cn(), ["tikv".to_owned()]);
    }

    #[test]
    fn debug_output_hides_the_key() {
        let material = Security::default()
            .with_ca(testdata("ca.pem"))
            .with_client_identity(testdata("client.pem"), testdata("client-key.pem"))
            .load()
            .unwrap();
        let debug = format!("{material:?}");
        assert!(debug.contains("<redacted>"), "{debug}");
        assert!(!debug.contains("PRIVATE"), "{debug}");
    }

    #[test]
    fn new_treats_empty_paths_as_unset() {
        let security = Security::new("", "", "", None::<String>);
        assert_eq!(security, Security::default());
        assert!(!security.is_enabled());
        assert!(security.validate().is_ok());
        assert!(load_err(security).contains("security.cluster-ssl-ca: not set"));
    }

    #[test]
    fn half_settings_are_errors() {
        let cert_only = Security {
            cluster_ssl_cert: Some(testdata("client.pem")),
            ..Security::default().with_ca(testdata("ca.pem"))
        };
        assert!(load_err(cert_only).contains("security.cluster-ssl-key: not set"));

        let key_only = Security {
            cluster_ssl_key: Some(testdata("client-key.pem")),
            ..Security::default()
        };
        assert!(load_err(key_only).contains("security.cluster-ssl-cert: not set"));

        let no_ca = Security::default()
            .with_client_identity(testdata("client.pem"), testdata("client-key.pem"));
        assert!(!no_ca.is_enabled());
        assert!(load_err(no_ca).contains("security.cluster-ssl-ca: not set"));

        let empty_cn = Security::default()
            .with_ca(testdata("ca.pem"))
            .with_verify_cn([""]);
        assert!(load_err(empty_cn).contains("security.cluster-verify-cn"));
    }

    #[test]
    fn missing_and_malformed_files_name_path_and_problem() {
        let missing = testdata("does-not-exist.pem");
        let err = load_err(Security::default().with_ca(&missing));
        assert!(err.contains("security.cluster-ssl-ca"), "{err}");
        assert!(err.contains(&missing.display().to_string()), "{err}");
        assert!(err.contains("cannot read"), "{err}");

        let err = load_err(Security::default().with_ca(testdata("not-pem.txt")));
        assert!(err.contains("not-pem.txt: no PEM block found"), "{err}");

        let err = load_err(Security::default().with_ca(testdata("truncated.pem")));
        assert!(
            err.contains("truncated.pem: PEM block `CERTIFICATE` is cut off"),
            "{err}"
        );

        // A key where a certificate belongs, and the other way round.
        let err = load_err(Security::default().with_ca(testdata("client-key.pem")));
        assert!(
            err.contains("no `-----BEGIN CERTIFICATE-----` block"),
            "{err}"
        );
        let err = load_err(
            Security::default()
                .with_ca(testdata("ca.pem"))
                .with_client_identity(testdata("client.pem"), testdata("client.pem")),
        );
        assert!(err.contains("security.cluster-ssl-key"), "{err}");
        assert!(err.contains("no private key block"), "{err}");
    }

    #[test]
    fn pem_scanner_accepts_key_forms_and_spots_encryption() {
        let block = |label: &str, body: &str| {
            format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n")
        };
        for label in ["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"] {
            let blocks = pem_blocks(&block(label, "TUlJQgo=")).unwrap();
            assert_eq!(blocks[0].label, label);
            assert!(!blocks[0].is_encrypted());
        }
        let pkcs8 = pem_blocks(&block("ENCRYPTED PRIVATE KEY", "TUlJQgo=")).unwrap();
        assert!(pkcs8[0].is_encrypted());
        let legacy = block(
            "RSA PRIVATE KEY",
            "Proc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nTUlJQgo=",
        );
        assert!(pem_blocks(&legacy).unwrap()[0].is_encrypted());

        // CRLF line endings and text around blocks are fine.
        let crlf =
            "subject=CN=x\r\n-----BEGIN CERTIFICATE-----\r\nTUlJ\r\n-----END CERTIFICATE-----\r\n";
        assert_eq!(pem_blocks(crlf).unwrap().len(), 1);

        assert!(
            pem_blocks(&block("CERTIFICATE", ""))
                .unwrap_err()
                .contains("empty")
        );
        assert!(
            pem_blocks(&block("CERTIFICATE", "not base64!"))
                .unwrap_err()
                .contains("base64")
        );
        let mismatched = "-----BEGIN CERTIFICATE-----\nTUlJ\n-----END PRIVATE KEY-----\n";
        assert!(pem_blocks(mismatched).unwrap_err().contains("instead of"));
    }

    #[test]
    fn toml_names_match_client_go() {
        let security: Security = toml::from_str(
            r#"
            cluster-ssl-ca = "/ca.pem"
            cluster-ssl-cert = "/cert.pem"
            cluster-ssl-key = "/key.pem"
            cluster-verify-cn = ["tikv", "pd"]
            "#,
        )
        .unwrap();
        assert_eq!(
            security,
            Security::new("/ca.pem", "/cert.pem", "/key.pem", ["tikv", "pd"])
        );

        // client-go writes unset paths as empty strings.
        let unset: Security = toml::from_str(
            "cluster-ssl-ca = \"\"\ncluster-ssl-cert = \"\"\ncluster-ssl-key = \"\"\n",
        )
        .unwrap();
        assert_eq!(unset, Security::default());
    }
}
