//! The smallest HTTP/1.x server that Prometheus needs: `GET /metrics`, one request per
//! connection (`Connection: close`). Hand-rolled on tokio's TcpListener rather than pulling in
//! an HTTP stack for one read-only endpoint; requests are bounded in size and time.

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The Prometheus text exposition format, version 0.0.4.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// A request head longer than this is refused.
const MAX_HEAD: usize = 8 * 1024;
/// A client that has not sent its request head by then is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /metrics` (`head`: HEAD, headers only).
    Metrics {
        head: bool,
    },
    /// `GET /`: a pointer to /metrics.
    Index {
        head: bool,
    },
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

/// Routes a request head (the request line and headers, as text).
pub fn route(head: &str) -> Route {
    let line = head.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") {
        return Route::BadRequest;
    }
    let head = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Route::MethodNotAllowed,
    };
    // Prometheus may add query parameters; they select nothing here.
    match target.split('?').next().unwrap_or("") {
        "/metrics" => Route::Metrics { head },
        "/" => Route::Index { head },
        _ => Route::NotFound,
    }
}

/// A complete response with `Connection: close`.
pub fn response(status: &str, content_type: &str, body: &str, head: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n",
        body.len()
    );
    if status.starts_with("405") {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    if !head {
        out.push_str(body);
    }
    out.into_bytes()
}

/// Serves connections until the task is dropped. `scrape` produces the exposition text or an
/// error message (answered with 500).
pub async fn serve<F, Fut>(listener: TcpListener, scrape: F)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<String, String>> + Send,
{
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let scrape = scrape.clone();
                tokio::spawn(async move {
                    if let Err(e) = answer(stream, scrape).await {
                        log::debug!("metrics request from {peer}: {e}");
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: do not spin.
                log::warn!("metrics endpoint: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer<F, Fut>(mut stream: TcpStream, scrape: F) -> std::io::Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<String, String>>,
{
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None)) => {
            let r = response("431 Request Header Fields Too Large", "text/plain", "", false);
            return stream.write_all(&r).await;
        }
        Ok(Err(e)) => return Err(e),
        Err(_) => return Ok(()),
    };
    let reply = match route(&head) {
        Route::Metrics { head } => match scrape().await {
            Ok(text) => response("200 OK", METRICS_CONTENT_TYPE, &text, head),
            Err(e) => {
                log::warn!("metrics scrape failed: {e}");
                response("500 Internal Server Error", "text/plain; charset=utf-8", &format!("{e}\n"), head)
            }
        },
        Route::Index { head } => {
            response("200 OK", "text/plain; charset=utf-8", "edge-ctl serve: metrics at /metrics\n", head)
        }
        Route::NotFound => {
            response("404 Not Found", "text/plain; charset=utf-8", "not found: metrics are at /metrics\n", false)
        }
        Route::MethodNotAllowed => {
            response("405 Method Not Allowed", "text/plain; charset=utf-8", "only GET and HEAD\n", false)
        }
        Route::BadRequest => response("400 Bad Request", "text/plain; charset=utf-8", "bad request\n", false),
    };
    stream.write_all(&reply).await?;
    stream.shutdown().await
}

/// Reads up to the blank line that ends the request head; None when it is too long.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Some(String::from_utf8_lossy(&buf[..end]).into_owned()));
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before the request head ended",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_requests() {
        let get = |t: &str| route(&format!("GET {t} HTTP/1.1\r\nHost: x"));
        assert_eq!(get("/metrics"), Route::Metrics { head: false });
        assert_eq!(get("/metrics?name[]=x"), Route::Metrics { head: false });
        assert_eq!(get("/"), Route::Index { head: false });
        assert_eq!(get("/other"), Route::NotFound);
        assert_eq!(route("HEAD /metrics HTTP/1.0"), Route::Metrics { head: true });
        assert_eq!(route("POST /metrics HTTP/1.1"), Route::MethodNotAllowed);
        assert_eq!(route("GET /metrics"), Route::BadRequest);
        assert_eq!(route("GET /metrics SPDY/3"), Route::BadRequest);
        assert_eq!(route(""), Route::BadRequest);
    }

    #[test]
    fn responses_carry_length_type_and_close() {
        let r = String::from_utf8(response("200 OK", METRICS_CONTENT_TYPE, "a 1\n", false)).unwrap();
        assert_eq!(
            r,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
             Content-Length: 4\r\nConnection: close\r\n\r\na 1\n"
        );
        let r = String::from_utf8(response("200 OK", "text/plain", "a 1\n", true)).unwrap();
        assert!(r.ends_with("Content-Length: 4\r\nConnection: close\r\n\r\n"));
        let r = String::from_utf8(response("405 Method Not Allowed", "text/plain", "", false)).unwrap();
        assert!(r.contains("Allow: GET, HEAD\r\n"));
    }
}
