//! PD's HTTP API, the one call the client needs from it: the minimum resolved timestamp of the
//! cluster or of given stores (`GET /pd/api/v1/min-resolved-ts`), which the safe-ts tracker
//! prefers to asking every store.
//!
//! Who calls it: the cluster's safe-ts tracker (`crate::safe_ts`), through
//! [`PdClient::min_resolved_ts`]. The request goes to the PD leader's client URL over
//! HTTP/1.1 (PD serves HTTP and gRPC on one port), on a connection of its own, bounded by the
//! PD timeout; over TLS when the URL is `https://`, with the same CA, client identity and
//! Common Name checks as the gRPC connections. PD URLs made `https://` by the endpoints alone
//! (no CA configured) are not spoken to: the call fails, and the tracker asks the stores
//! instead, as it does whenever PD cannot answer.
//!
//! Ports tikv/pd `client/http/interface.go` (`GetMinResolvedTSByStoresIDs`) and the
//! `MinResolvedTSPrefix` of `client/http/api.go`.

use std::collections::HashMap;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::time::Instant;

use super::PdClient;
use crate::{Error, Result};

const MIN_RESOLVED_TS_PATH: &str = "/pd/api/v1/min-resolved-ts";
/// The largest answer read (the JSON of a few thousand stores is far below it).
const MAX_BODY: usize = 4 << 20;

/// PD's minimum resolved timestamps.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct MinResolvedTs {
    /// Of the cluster, or of the stores asked for (`u64::MAX` or 0 when unknown).
    pub(crate) min: u64,
    /// Per store, when stores were asked for.
    pub(crate) stores: HashMap<u64, u64>,
}

#[derive(Deserialize)]
struct Answer {
    min_resolved_ts: u64,
    #[serde(default)]
    is_real_time: bool,
    #[serde(default)]
    stores_min_resolved_ts: Option<HashMap<String, u64>>,
}

/// Parses PD's answer; a PD that does not compute it in real time gives no usable value.
fn parse(body: &[u8]) -> Result<MinResolvedTs> {
    let answer: Answer = serde_json::from_slice(body).map_err(|e| Error::Pd {
        message: format!("unreadable min resolved ts answer: {e}"),
    })?;
    if !answer.is_real_time {
        return Err(Error::Pd {
            message: "min resolved ts is not enabled".to_owned(),
        });
    }
    let mut stores = HashMap::new();
    for (id, ts) in answer.stores_min_resolved_ts.unwrap_or_default() {
        let id = id.parse::<u64>().map_err(|_| Error::Pd {
            message: format!("min resolved ts answer names store {id:?}"),
        })?;
        stores.insert(id, ts);
    }
    Ok(MinResolvedTs {
        min: answer.min_resolved_ts,
        stores,
    })
}

/// The path and query of a min-resolved-ts request: the cluster's without stores, else the
/// given stores'.
fn min_resolved_ts_uri(store_ids: &[u64]) -> String {
    if store_ids.is_empty() {
        return MIN_RESOLVED_TS_PATH.to_owned();
    }
    let scope: Vec<String> = store_ids.iter().map(u64::to_string).collect();
    format!("{MIN_RESOLVED_TS_PATH}?scope={}", scope.join(","))
}

impl PdClient {
    /// PD's minimum resolved timestamp of the cluster (no stores given) or of `store_ids`
    /// (client-go `GetMinResolvedTSByStoresIDs`), asked of the leader.
    pub(crate) async fn min_resolved_ts(&self, store_ids: &[u64]) -> Result<MinResolvedTs> {
        let core = self.core();
        let (_, target) = core.discovery.leader_target(false);
        let Some(target) = target else {
            return Err(Error::PdServerTimeout {
                message: "no PD leader known to ask for the min resolved ts".to_owned(),
            });
        };
        let deadline = Instant::now() + core.timeout;
        let uri = min_resolved_ts_uri(store_ids);
        let tls = core.discovery.connector().http_tls();
        match tokio::time::timeout_at(deadline, http_get(&target.url, &uri, tls)).await {
            Ok(Ok(body)) => parse(&body),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::PdServerTimeout {
                message: format!("GET {uri} on {} timed out", target.url),
            }),
        }
    }
}

/// One GET of `path` on the PD member at `url` (`http://host:port`, or `https://` with `tls`);
/// the body of a 200 answer.
async fn http_get(
    url: &str,
    path: &str,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> Result<Vec<u8>> {
    let fail = |message: String| Error::Pd { message };
    let (authority, tls) = if let Some(authority) = url.strip_prefix("http://") {
        (authority, None)
    } else if let Some(authority) = url.strip_prefix("https://") {
        let tls = tls.ok_or_else(|| {
            fail(format!(
                "no CA configured for PD's HTTP API at {url} (security.cluster-ssl-ca)"
            ))
        })?;
        (authority, Some(tls))
    } else {
        return Err(fail(format!("unsupported PD URL {url}")));
    };
    let tcp = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| fail(format!("cannot connect to {url}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    match tls {
        None => exchange(TokioIo::new(tcp), url, authority, path).await,
        Some(config) => {
            let host = host_of(authority);
            let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                .map_err(|e| fail(format!("bad PD host {host:?}: {e}")))?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| fail(format!("TLS handshake with {url} failed: {e}")))?;
            exchange(TokioIo::new(stream), url, authority, path).await
        }
    }
}

/// The host of `host:port` (IPv6 hosts in brackets lose them).
fn host_of(authority: &str) -> &str {
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => authority,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The request and its answer over an open connection.
async fn exchange<T>(io: T, url: &str, authority: &str, path: &str) -> Result<Vec<u8>>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let fail = |message: String| Error::Pd { message };
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .body(Empty::<Bytes>::new())
        .map_err(|e| fail(format!("bad request {path}: {e}")))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| fail(format!("HTTP handshake with {url} failed: {e}")))?;
    let exchange = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| fail(format!("GET {path} on {url} failed: {e}")))?;
        let status = response.status();
        let body = http_body_util::Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| fail(format!("reading GET {path} on {url}: {e}")))?
            .to_bytes();
        if !status.is_success() {
            return Err(fail(format!(
                "GET {path} on {url}: {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        Ok(body.to_vec())
    };
    // The connection is driven in this same future, so it ends with the answer, an error, or
    // the caller's timeout; no task outlives the call.
    tokio::pin!(connection, exchange);
    tokio::select! {
        biased;
        result = &mut exchange => result,
        ended = &mut connection => match ended {
            // A server that answers and closes (`connection: close`) ends the connection with
            // the answer already handed over: finish reading it.
            Ok(()) => exchange.await,
            Err(e) => Err(fail(format!("connection to {url} failed during GET {path}: {e}"))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_as_pd_writes_them() {
        let cluster = br#"{"is_real_time":true,"min_resolved_ts":42,"persist_interval":"1s","stores_min_resolved_ts":null}"#;
        assert_eq!(
            parse(cluster).unwrap(),
            MinResolvedTs {
                min: 42,
                stores: HashMap::new()
            }
        );
        let scoped = br#"{"is_real_time":true,"min_resolved_ts":7,"stores_min_resolved_ts":{"1":7,"2":18446744073709551615}}"#;
        let parsed = parse(scoped).unwrap();
        assert_eq!(parsed.stores[&1], 7);
        assert_eq!(parsed.stores[&2], u64::MAX);
        let off = br#"{"is_real_time":false,"min_resolved_ts":0}"#;
        assert!(parse(off).unwrap_err().to_string().contains("not enabled"));
        assert!(parse(b"not json").is_err());
        let bad_id =
            br#"{"is_real_time":true,"min_resolved_ts":1,"stores_min_resolved_ts":{"x":1}}"#;
        assert!(parse(bad_id).is_err());
    }

    #[test]
    fn the_scope_lists_the_stores() {
        assert_eq!(min_resolved_ts_uri(&[]), "/pd/api/v1/min-resolved-ts");
        assert_eq!(
            min_resolved_ts_uri(&[1, 20]),
            "/pd/api/v1/min-resolved-ts?scope=1,20"
        );
    }

    #[tokio::test]
    async fn the_min_resolved_ts_comes_from_the_mock_pd() {
        let cluster = tikv_mock::MockCluster::builder().start().await.unwrap();
        let config = crate::Config::default();
        let pd = PdClient::connect(cluster.pd_endpoints(), &config)
            .await
            .unwrap();
        let ids = cluster.store_ids();
        let whole = pd.min_resolved_ts(&[]).await.unwrap();
        assert!(whole.min > 0 && whole.min != u64::MAX, "{whole:?}");
        let scoped = pd.min_resolved_ts(&ids).await.unwrap();
        assert_eq!(scoped.stores.len(), ids.len());
        assert!(scoped.min >= whole.min);
        let unknown = pd.min_resolved_ts(&[999]).await.unwrap();
        assert_eq!(unknown.stores[&999], u64::MAX);
    }

    /// A one-shot HTTPS server with the transport's test certificate (CN=tikv-server, for
    /// 127.0.0.1): answers one request with `body`.
    async fn https_once(body: &'static str) -> String {
        use rustls::pki_types::pem::PemObject;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/transport/testdata");
        let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
        let chain = rustls::pki_types::CertificateDer::pem_slice_iter(&read("server.pem"))
            .collect::<std::result::Result<Vec<_>, _>>()
            .unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::from_pem_slice(&read("server-key.pem")).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            }
        });
        format!("https://{addr}")
    }

    fn tls_config(verify_cn: &[&str]) -> std::sync::Arc<rustls::ClientConfig> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/transport/testdata");
        let security = crate::Security::default()
            .with_ca(dir.join("ca.pem"))
            .with_verify_cn(verify_cn.iter().copied());
        crate::tls::http_config(&security.load().unwrap()).unwrap()
    }

    #[tokio::test]
    async fn pd_behind_tls_is_asked_with_the_configured_ca_and_names() {
        let body = r#"{"is_real_time":true,"min_resolved_ts":5}"#;
        let url = https_once(body).await;
        let path = min_resolved_ts_uri(&[]);
        let got = http_get(&url, &path, Some(tls_config(&[]))).await.unwrap();
        assert_eq!(parse(&got).unwrap().min, 5);
        let got = http_get(&url, &path, Some(tls_config(&["pd-server", "tikv-server"])))
            .await
            .unwrap();
        assert_eq!(parse(&got).unwrap().min, 5);

        // A certificate whose Common Name is not allowed is refused.
        let err = http_get(&url, &path, Some(tls_config(&["pd-server"])))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("TLS handshake"), "{err}");
        // No CA configured: no TLS call at all.
        let err = http_get(&url, &path, None).await.unwrap_err();
        assert!(err.to_string().contains("cluster-ssl-ca"), "{err}");
        assert!(http_get("ftp://x:1", &path, None).await.is_err());
    }

    #[test]
    fn hosts_lose_their_ports_and_brackets() {
        assert_eq!(host_of("pd:2379"), "pd");
        assert_eq!(host_of("127.0.0.1:2379"), "127.0.0.1");
        assert_eq!(host_of("[::1]:2379"), "::1");
        assert_eq!(host_of("pd"), "pd");
    }
}
