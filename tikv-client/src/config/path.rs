//! The `tikv://` connection URI (client-go `config.ParsePath`): PD endpoints plus the
//! `disableGC` and `keyspaceName` query options.

use std::str::FromStr;

use crate::{Error, Result};

/// A parsed `tikv://pd1:2379,pd2:2379?disableGC=true&keyspaceName=ks` URI.
///
/// ```
/// use tikv_client::config::TikvPath;
///
/// let path: TikvPath = "tikv://pd1:2379,pd2:2379?keyspaceName=ks".parse()?;
/// assert_eq!(path.pd_endpoints, ["pd1:2379", "pd2:2379"]);
/// assert_eq!(path.keyspace_name.as_deref(), Some("ks"));
/// assert!(!path.disable_gc);
/// # Ok::<(), tikv_client::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TikvPath {
    /// PD addresses, in the order written (`host:port`, separated by commas in the URI).
    pub pd_endpoints: Vec<String>,
    /// The `disableGC` option (`true` or `false`, any case; default false).
    pub disable_gc: bool,
    /// The `keyspaceName` option; `None` when absent or empty.
    pub keyspace_name: Option<String>,
}

impl TikvPath {
    /// Parses a `tikv://` URI as client-go's `ParsePath` does. The scheme is case-insensitive,
    /// query values are percent-decoded, the first occurrence of an option wins, and options
    /// other than `disableGC` and `keyspaceName` are ignored. Unlike client-go, an empty host
    /// list or an empty endpoint (`tikv://a:1,,b:2`) is an error.
    ///
    /// ```
    /// use tikv_client::config::TikvPath;
    /// let path = TikvPath::parse("tikv://pd:2379?disableGC=true")?;
    /// assert!(path.disable_gc);
    /// # Ok::<(), tikv_client::Error>(())
    /// ```
    pub fn parse(uri: &str) -> Result<TikvPath> {
        let problem = |why: &str| Error::invalid_argument(format!("tikv path {uri:?}: {why}"));
        let (scheme, rest) = uri
            .split_once("://")
            .ok_or_else(|| problem("expected a URI like tikv://pd1:2379,pd2:2379"))?;
        if !scheme.eq_ignore_ascii_case("tikv") {
            return Err(problem(&format!(
                "URI scheme must be tikv, found {scheme:?}"
            )));
        }
        let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
        let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
        let authority = before_query
            .split_once('/')
            .map_or(before_query, |(host, _)| host);
        let hosts = authority
            .rsplit_once('@')
            .map_or(authority, |(_, hosts)| hosts);

        let pd_endpoints: Vec<String> = hosts.split(',').map(str::to_owned).collect();
        if pd_endpoints.iter().any(String::is_empty) {
            return Err(problem(
                "expected one or more PD endpoints separated by commas",
            ));
        }

        let mut disable_gc = None;
        let mut keyspace_name = None;
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent_decode(key).map_err(|why| problem(&why))?;
            let slot = match key.as_str() {
                "disableGC" => &mut disable_gc,
                "keyspaceName" => &mut keyspace_name,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(percent_decode(value).map_err(|why| problem(&why))?);
            }
        }

        let disable_gc = match disable_gc
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("false" | "") => false,
            Some("true") => true,
            Some(_) => return Err(problem("disableGC must be true or false")),
        };
        Ok(TikvPath {
            pd_endpoints,
            disable_gc,
            keyspace_name: keyspace_name.filter(|name| !name.is_empty()),
        })
    }
}

impl FromStr for TikvPath {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        TikvPath::parse(s)
    }
}

/// Decodes a URI query component: `%XX` escapes, and `+` as a space.
fn percent_decode(text: &str) -> std::result::Result<String, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(byte) = bytes.next() {
        match byte {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |b: Option<u8>| b.and_then(|b| char::from(b).to_digit(16));
                match (hex(bytes.next()), hex(bytes.next())) {
                    (Some(high), Some(low)) => out.push((high * 16 + low) as u8),
                    _ => return Err(format!("invalid percent-escape in {text:?}")),
                }
            }
            _ => out.push(byte),
        }
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} does not decode to UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(uri: &str) -> TikvPath {
        TikvPath::parse(uri).unwrap_or_else(|e| panic!("{uri}: {e}"))
    }

    // Ported from client-go config/config_test.go TestParsePath.
    #[test]
    fn client_go_cases() {
        let path = parse("tikv://node1:2379,node2:2379");
        assert_eq!(path.pd_endpoints, ["node1:2379", "node2:2379"]);
        assert!(!path.disable_gc);
        assert_eq!(path.keyspace_name, None);

        assert!(TikvPath::parse("tikv://node1:2379").is_ok());

        let path = parse("tikv://node1:2379?disableGC=true&keyspaceName=DEFAULT");
        assert!(path.disable_gc);
        assert_eq!(path.keyspace_name.as_deref(), Some("DEFAULT"));
    }

    #[test]
    fn query_details() {
        assert!(parse("TiKV://pd:2379?disableGC=TRUE").disable_gc);
        assert!(!parse("tikv://pd:2379?disableGC=False").disable_gc);
        assert!(!parse("tikv://pd:2379?disableGC=").disable_gc);
        let path = parse(
            "tikv://pd:2379/ignored/path?cluster=1&keyspaceName=my%20ks+2&keyspaceName=b#frag",
        );
        assert_eq!(path.pd_endpoints, ["pd:2379"]);
        assert_eq!(path.keyspace_name.as_deref(), Some("my ks 2"));
        assert_eq!(parse("tikv://user@pd:2379").pd_endpoints, ["pd:2379"]);
        assert_eq!(
            parse("tikv://[::1]:2379,[::2]:2379").pd_endpoints,
            ["[::1]:2379", "[::2]:2379"]
        );
        assert_eq!(parse("tikv://pd:2379?keyspaceName=").keyspace_name, None);
    }

    #[test]
    fn rejects_bad_uris() {
        for (uri, expected) in [
            ("http://pd:2379", "URI scheme must be tikv"),
            ("pd:2379", "expected a URI like"),
            ("tikv://", "PD endpoints"),
            ("tikv://a:1,,b:2", "PD endpoints"),
            (
                "tikv://pd:2379?disableGC=yes",
                "disableGC must be true or false",
            ),
            ("tikv://pd:2379?keyspaceName=%zz", "invalid percent-escape"),
            ("tikv://pd:2379?keyspaceName=%ff", "UTF-8"),
        ] {
            let err = TikvPath::parse(uri).expect_err(uri).to_string();
            assert!(err.contains(expected), "{uri}: {err}");
            assert!(err.contains("invalid argument"), "{err}");
        }
    }
}
