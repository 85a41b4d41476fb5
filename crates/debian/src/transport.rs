//! Fetching files from a mirror: `http://` through `ureq` (plain HTTP only, as apt's own transport
//! for Debian mirrors; integrity comes from the signed Release file) and `file://` from the local
//! file system.

use std::{
    collections::HashMap,
    fs::File,
    io::{self, Read},
    path::PathBuf,
    sync::Mutex,
    time::Duration,
};

use thiserror::Error;
use ureq::unversioned::{
    resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver},
    transport::{DefaultConnector, NextTimeout},
};

/// A failed fetch.
/// How many times a request is tried before its failure is reported.
pub const RETRIES: u32 = 4;

#[derive(Debug, Error)]
pub enum FetchError {
    #[error("{url}: not found")]
    NotFound { url: String },
    #[error("{url}: HTTP status {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: {source}")]
    Http { url: String, source: Box<ureq::Error> },
    #[error("{url}: {source}")]
    Io { url: String, source: io::Error },
    #[error("{url}: unsupported URL scheme (http:// and file:// mirrors are supported)")]
    UnsupportedScheme { url: String },
    #[error("{url}: larger than the {limit} bytes allowed")]
    TooLarge { url: String, limit: u64 },
}

impl FetchError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, FetchError::NotFound { .. })
    }
}

/// Opens URLs for reading. Cheap to clone (the HTTP connection pool is shared).
#[derive(Debug, Clone)]
pub struct Transport {
    agent: ureq::Agent,
}

impl Default for Transport {
    fn default() -> Self {
        Self::new()
    }
}

impl Transport {
    pub fn new() -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            // A stalled transfer fails; a long one does not.
            .timeout_per_read(Some(Duration::from_secs(60)))
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            // Parallel downloads keep their connections for the next file.
            .max_idle_connections_per_host(32)
            .max_idle_connections(64)
            .build();
        let agent = ureq::Agent::with_parts(config, DefaultConnector::new(), CachingResolver::default());
        Self { agent }
    }

    /// Opens a URL as a byte stream.
    pub fn open(&self, url: &str) -> Result<Box<dyn Read + Send>, FetchError> {
        if let Some(path) = file_url_path(url) {
            return match File::open(&path) {
                Ok(f) => Ok(Box::new(f)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    Err(FetchError::NotFound { url: url.to_owned() })
                }
                Err(source) => Err(FetchError::Io { url: url.to_owned(), source }),
            };
        }
        if !url.starts_with("http://") {
            return Err(FetchError::UnsupportedScheme { url: url.to_owned() });
        }
        // A failed connection (name resolution, refused, reset) or a server error is tried again a few
        // times with a growing pause; an answer (404, other statuses) is final.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.agent.get(url).call();
            let retry = match &result {
                Err(_) => true,
                Ok(r) => r.status().is_server_error(),
            };
            if retry && attempt < RETRIES {
                tracing::debug!(url, attempt, "fetch failed; trying again");
                std::thread::sleep(std::time::Duration::from_millis(500 << attempt));
                continue;
            }
            let response =
                result.map_err(|e| FetchError::Http { url: url.to_owned(), source: Box::new(e) })?;
            return match response.status().as_u16() {
                200 => Ok(Box::new(response.into_body().into_reader())),
                404 | 410 => Err(FetchError::NotFound { url: url.to_owned() }),
                status => Err(FetchError::Status { url: url.to_owned(), status }),
            };
        }
    }

    /// Reads a whole URL into memory, refusing more than `limit` bytes.
    pub fn get(&self, url: &str, limit: u64) -> Result<Vec<u8>, FetchError> {
        let mut body = Vec::new();
        self.open(url)?
            .take(limit + 1)
            .read_to_end(&mut body)
            .map_err(|source| FetchError::Io { url: url.to_owned(), source })?;
        if body.len() as u64 > limit {
            return Err(FetchError::TooLarge { url: url.to_owned(), limit });
        }
        Ok(body)
    }
}

/// Looks each host up once per transport, one lookup at a time.
///
/// ureq resolves the host name before every request, even one that reuses a pooled connection. A
/// build fetches hundreds of files from one mirror with several downloads at once, and resolvers that
/// drop some of many simultaneous queries (as sandboxed and container resolvers do) stall each
/// dropped one for the C library's five-second timeout. A build lasts minutes, so the mirror's
/// addresses are kept for the transport's lifetime, as apt keeps them for a run.
#[derive(Debug, Default)]
struct CachingResolver {
    inner: DefaultResolver,
    known: Mutex<HashMap<String, ResolvedSocketAddrs>>,
}

impl Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let key =
            format!("{}://{}", uri.scheme_str().unwrap_or(""), uri.authority().map_or("", |a| a.as_str()));
        // The lock is held through the lookup: the first request of a burst resolves, the others wait
        // for its answer instead of sending queries of their own.
        let mut known = self.known.lock().unwrap_or_else(|poison| poison.into_inner());
        if let Some(addrs) = known.get(&key) {
            return Ok(addrs.clone());
        }
        let addrs = self.inner.resolve(uri, config, timeout)?;
        known.insert(key, addrs.clone());
        Ok(addrs)
    }
}

/// The local path of a `file:` URL (`file:///srv/repo` or apt's `file:/srv/repo`), percent-decoded.
pub fn file_url_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("file:")?;
    let path = match rest.strip_prefix("//") {
        // `file://localhost/path` or `file:///path`
        Some(r) => &r[r.find('/')?..],
        None => rest,
    };
    Some(PathBuf::from(percent_decode(path)))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls() {
        assert_eq!(file_url_path("file:///srv/repo"), Some(PathBuf::from("/srv/repo")));
        assert_eq!(file_url_path("file:/srv/repo"), Some(PathBuf::from("/srv/repo")));
        assert_eq!(file_url_path("file://localhost/srv/a%20b"), Some(PathBuf::from("/srv/a b")));
        assert_eq!(file_url_path("file:///x/100%"), Some(PathBuf::from("/x/100%")));
        assert_eq!(file_url_path("http://a.invalid/x"), None);
    }

    #[test]
    fn file_transport_reads_and_reports_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs_err::write(&file, b"data").unwrap();
        let t = Transport::new();
        let url = format!("file://{}", file.display());
        assert_eq!(t.get(&url, 10).unwrap(), b"data");
        assert!(matches!(t.get(&url, 3), Err(FetchError::TooLarge { limit: 3, .. })));
        assert!(t.get(&format!("{url}.missing"), 10).unwrap_err().is_not_found());
        assert!(matches!(t.get("https://a.invalid/x", 10), Err(FetchError::UnsupportedScheme { .. })));
    }

    #[test]
    fn dropped_connections_are_tried_again_and_answers_are_final() {
        use std::io::Write as _;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let mut seen = 0;
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                seen += 1;
                let mut buf = [0u8; 1024];
                let _ = std::io::Read::read(&mut stream, &mut buf);
                match seen {
                    // The first two connections die before an answer, as on a flaky network.
                    1 | 2 => drop(stream),
                    3 => {
                        let _ = stream.write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
                        );
                    }
                    _ => {
                        let _ = stream.write_all(
                            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                        return seen;
                    }
                }
            }
            seen
        });
        let t = Transport::new();
        assert_eq!(t.get(&format!("http://{addr}/x"), 100).unwrap(), b"hello");
        assert!(t.get(&format!("http://{addr}/y"), 100).unwrap_err().is_not_found());
        assert_eq!(server.join().unwrap(), 4, "a 404 is an answer: asked once");
    }
}
