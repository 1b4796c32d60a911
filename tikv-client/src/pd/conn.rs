//! Connections to PD members: endpoint URLs, TLS settings, the per-URL channel cache, and
//! [`PdChannel`], a channel that stamps PD's routing metadata on every request.
//!
//! Who calls it: [`super::discovery`] opens a channel per member URL here, and every PD call
//! borrows one. Channels are tonic's lazy channels: they connect on first use and reconnect by
//! themselves after the member went away, so the cache never has to evict a broken one.
//!
//! Ports tikv/pd `client/pkg/utils/tlsutil/url.go` (`AddrsToURLs`, `PickMatchedURL`),
//! `client/pkg/utils/grpcutil/grpcutil.go` (`GetOrCreateGRPCConn`, the metadata keys
//! `pd-forwarded-host` and `pd-allow-follower-handle`, `BuildForwardContext`,
//! `BuildFollowerHandleContext`) and the TLS half of `tlsutil.go`. Unlike the Go client, the
//! scheme is not cosmetic here: tonic speaks TLS only to `https://` URLs, so every URL is
//! rewritten to the scheme the settings call for.

use std::collections::HashMap;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::body::Body;
use tonic::codegen::Service;
use tonic::codegen::http::{self, HeaderName, HeaderValue};
use tonic::transport::{Channel, Endpoint};

use crate::config::{Config, Security};
use crate::tls::ClientTls;
use crate::{Error, Result};

const HTTP: &str = "http://";
const HTTPS: &str = "https://";

/// TLS settings for PD connections, built once from [`Security`].
#[derive(Debug, Clone)]
pub(crate) struct TlsSettings {
    config: Option<ClientTls>,
    /// The same checks for PD's HTTP API; `None` without a CA (HTTP calls then fail and their
    /// callers do without).
    http: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl TlsSettings {
    /// TLS is on when a CA is configured (client-go's rule) or when any seed endpoint is an
    /// `https://` URL; in the latter case, without a CA, servers are verified against the
    /// system's trust store.
    pub(crate) fn new(security: &Security, seeds: &[String]) -> Result<Self> {
        if security.is_enabled() {
            let material = security.load()?;
            return Ok(TlsSettings {
                config: Some(ClientTls::from_material(&material)?),
                http: Some(crate::tls::http_config(&material)?),
            });
        }
        let any_https = seeds
            .iter()
            .any(|s| s.trim().to_ascii_lowercase().starts_with(HTTPS));
        Ok(TlsSettings {
            config: any_https.then(ClientTls::native_roots),
            http: None,
        })
    }

    /// Whether connections use TLS.
    pub(crate) fn enabled(&self) -> bool {
        self.config.is_some()
    }

    /// Turns an endpoint as users write it (`host:port`, `http://host:port`,
    /// `https://host:port/`) into the URL this client dials: with the scheme TLS calls for and
    /// no trailing slash.
    pub(crate) fn url(&self, endpoint: &str) -> Result<String> {
        let trimmed = endpoint.trim();
        let lower = trimmed.to_ascii_lowercase();
        let host = if lower.starts_with(HTTP) {
            &trimmed[HTTP.len()..]
        } else if lower.starts_with(HTTPS) {
            &trimmed[HTTPS.len()..]
        } else if trimmed.contains("://") {
            return Err(Error::invalid_argument(format!(
                "PD endpoint {endpoint:?}: only http:// and https:// URLs are supported"
            )));
        } else {
            trimmed
        };
        let host = host.trim_end_matches('/');
        if host.is_empty() || host.contains('/') {
            return Err(Error::invalid_argument(format!(
                "PD endpoint {endpoint:?}: expected host:port or a URL without a path"
            )));
        }
        let scheme = if self.enabled() { HTTPS } else { HTTP };
        Ok(format!("{scheme}{host}"))
    }

    /// The URL to dial among a member's client URLs: the first one whose scheme matches the
    /// TLS setting, else the first one rewritten (PD's `PickMatchedURL`).
    pub(crate) fn pick_url(&self, urls: &[String]) -> Option<String> {
        let wanted = if self.enabled() { HTTPS } else { HTTP };
        let matched = urls
            .iter()
            .find(|u| u.to_ascii_lowercase().starts_with(wanted))
            .or_else(|| urls.first())?;
        self.url(matched).ok()
    }

    fn apply(&self, endpoint: Endpoint) -> Result<Endpoint> {
        match &self.config {
            None => Ok(endpoint),
            Some(config) => config.apply(endpoint, "PD"),
        }
    }
}

/// The metadata key naming the PD leader a follower should forward a request to (PD's
/// `ForwardMetadataKey`).
pub(crate) const FORWARDED_HOST: &str = "pd-forwarded-host";
/// The metadata key that lets a follower answer a region read itself (PD's
/// `FollowerHandleMetadataKey`).
pub(crate) const FOLLOWER_HANDLE: &str = "pd-allow-follower-handle";

/// A channel to one PD member plus the metadata every request on it carries: nothing for the
/// leader, `pd-forwarded-host: <leader URL>` on a follower that forwards to the leader, or
/// `pd-allow-follower-handle` on a follower asked to answer a read itself (PD's
/// `serviceClient.BuildGRPCTargetContext`). Generated clients take it wherever they take a
/// [`Channel`]; the header is added as the request goes out, so building one costs a clone of
/// the channel and nothing per request beyond the header itself.
#[derive(Debug, Clone)]
pub(crate) struct PdChannel {
    channel: Channel,
    header: Option<(HeaderName, HeaderValue)>,
}

impl PdChannel {
    /// Requests go to the member itself.
    pub(crate) fn direct(channel: Channel) -> Self {
        PdChannel {
            channel,
            header: None,
        }
    }

    /// Requests go through this member on to the leader at `leader_url`.
    pub(crate) fn forwarded(channel: Channel, leader_url: &str) -> Result<Self> {
        let value = HeaderValue::from_str(leader_url).map_err(|_| {
            Error::internal(format!(
                "PD leader URL {leader_url:?} is not a valid header"
            ))
        })?;
        Ok(PdChannel {
            channel,
            header: Some((HeaderName::from_static(FORWARDED_HOST), value)),
        })
    }

    /// The member (a follower) may answer region reads itself.
    pub(crate) fn follower_handle(channel: Channel) -> Self {
        PdChannel {
            channel,
            header: Some((
                HeaderName::from_static(FOLLOWER_HANDLE),
                HeaderValue::from_static(""),
            )),
        }
    }

    /// The metadata this channel adds, for tests and logs.
    #[cfg(test)]
    pub(crate) fn header(&self) -> Option<(&str, &str)> {
        self.header
            .as_ref()
            .map(|(k, v)| (k.as_str(), v.to_str().unwrap_or_default()))
    }
}

impl Service<http::Request<Body>> for PdChannel {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = tonic::transport::channel::ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), Self::Error>> {
        Service::poll_ready(&mut self.channel, cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        if let Some((name, value)) = &self.header {
            request.headers_mut().insert(name.clone(), value.clone());
        }
        Service::call(&mut self.channel, request)
    }
}

/// Opens and caches one channel per PD URL.
#[derive(Debug)]
pub(crate) struct Connector {
    tls: TlsSettings,
    connect_timeout: Duration,
    keepalive_time: Duration,
    keepalive_timeout: Duration,
    channels: Mutex<HashMap<String, Channel>>,
}

impl Connector {
    /// The rustls configuration for HTTP calls to PD over TLS, when TLS is on with a CA.
    pub(crate) fn http_tls(&self) -> Option<std::sync::Arc<rustls::ClientConfig>> {
        self.tls.http.clone()
    }

    pub(crate) fn new(tls: TlsSettings, config: &Config) -> Self {
        Connector {
            tls,
            connect_timeout: config.pd_client.pd_server_timeout,
            keepalive_time: config.tikv_client.grpc_keepalive_time,
            keepalive_timeout: config.tikv_client.grpc_keepalive_timeout,
            channels: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn tls(&self) -> &TlsSettings {
        &self.tls
    }

    /// The channel to `url` (already normalized), opened lazily on first use.
    pub(crate) fn channel(&self, url: &str) -> Result<Channel> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = channels.get(url) {
            return Ok(channel.clone());
        }
        let endpoint = self.endpoint(url)?;
        let channel = endpoint.connect_lazy();
        channels.insert(url.to_owned(), channel.clone());
        Ok(channel)
    }

    /// A channel to `url` (already normalized) that is not cached: it closes when its last
    /// clone is dropped (router servers come and go with the registry).
    pub(crate) fn open(&self, url: &str) -> Result<Channel> {
        Ok(self.endpoint(url)?.connect_lazy())
    }

    fn endpoint(&self, url: &str) -> Result<Endpoint> {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| Error::invalid_argument(format!("PD endpoint {url:?}: {e}")))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            // Keepalive pings find a PD that vanished without closing its connections (a
            // partitioned host), which would otherwise hold the TSO stream until its deadline.
            .http2_keep_alive_interval(self.keepalive_time)
            .keep_alive_timeout(self.keepalive_timeout)
            .keep_alive_while_idle(true);
        self.tls.apply(endpoint)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn testdata(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("src/pd/testdata")
            .join(name)
    }

    fn plain() -> TlsSettings {
        TlsSettings::new(&Security::default(), &[]).unwrap()
    }

    #[test]
    fn endpoints_become_urls_of_the_right_scheme() {
        let tls = plain();
        assert!(!tls.enabled());
        assert_eq!(tls.url("127.0.0.1:2379").unwrap(), "http://127.0.0.1:2379");
        assert_eq!(tls.url(" http://pd:2379/ ").unwrap(), "http://pd:2379");
        assert_eq!(tls.url("HTTP://pd:2379").unwrap(), "http://pd:2379");
        assert!(tls.url("unix:///tmp/pd").is_err());
        assert!(tls.url("http://").is_err());
        assert!(tls.url("pd:2379/path").is_err());

        let tls = TlsSettings::new(&Security::default(), &["https://pd:2379".to_owned()]).unwrap();
        assert!(tls.enabled(), "an https seed turns TLS on");
        assert_eq!(tls.url("pd:2379").unwrap(), "https://pd:2379");
        assert_eq!(tls.url("http://pd2:2379").unwrap(), "https://pd2:2379");
    }

    #[test]
    fn member_urls_prefer_the_matching_scheme() {
        let urls = vec!["http://a:1".to_owned(), "https://b:2".to_owned()];
        assert_eq!(plain().pick_url(&urls).unwrap(), "http://a:1");
        let tls = TlsSettings::new(&Security::default(), &["https://x:1".to_owned()]).unwrap();
        assert_eq!(tls.pick_url(&urls).unwrap(), "https://b:2");
        assert_eq!(plain().pick_url(&[]), None);
    }

    #[test]
    fn tls_settings_build_from_security() {
        let security = Security::default()
            .with_ca(testdata("ca.pem"))
            .with_client_identity(testdata("client.pem"), testdata("client-key.pem"));
        let tls = TlsSettings::new(&security, &["pd:2379".to_owned()]).unwrap();
        assert!(tls.enabled(), "a CA turns TLS on");
        assert_eq!(tls.url("pd:2379").unwrap(), "https://pd:2379");
        // The rustls client configuration is built (and the PEM files parsed) here.
        let connector = Connector::new(tls.clone(), &Config::default());
        connector.endpoint("https://pd:2379").unwrap();

        // Any number of allowed Common Names: they are checked by a verifier of their own.
        for names in [vec!["pd-server"], vec!["pd-server", "tikv-server"]] {
            let with_cn = security.clone().with_verify_cn(names);
            let tls = TlsSettings::new(&with_cn, &[]).unwrap();
            Connector::new(tls, &Config::default())
                .endpoint("https://pd:2379")
                .unwrap();
        }

        let missing = Security::default().with_ca(testdata("no-such-file.pem"));
        assert!(matches!(
            TlsSettings::new(&missing, &[]),
            Err(Error::Config { .. })
        ));
    }

    #[test]
    fn channels_are_cached_per_url() {
        let connector = Connector::new(plain(), &Config::default());
        // Lazy channels need a runtime only when used; creating them does not connect.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            connector.channel("http://127.0.0.1:1").unwrap();
            connector.channel("http://127.0.0.1:1").unwrap();
            connector.channel("http://127.0.0.1:2").unwrap();
            assert_eq!(connector.channels.lock().unwrap().len(), 2);
        });
    }
}
