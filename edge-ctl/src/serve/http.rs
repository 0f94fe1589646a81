//! The metrics endpoint's HTTP/1.1 server, on hyper: `GET`/`HEAD /metrics`, `/` pointing there,
//! over TLS and behind basic authentication when `--web.config.file` asks for them. Requests are
//! bounded in size (hyper's read buffer) and time (its header read timeout, and a limit on each
//! connection's life), so a slow or oversized client cannot pin the daemon.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, ALLOW, AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use super::metrics::Format;
use super::web_config::WebConfig;

/// hyper's smallest read buffer: a request head longer than this is refused (431).
const MAX_HEAD: usize = 8 * 1024;
/// A client that has not sent its request head (or finished the TLS handshake) by then is
/// dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection is closed after this long, however busy; a scraper simply opens another.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);

/// Serves connections until the task is dropped. `scrape` produces the exposition text in the
/// format asked for, or an error message (answered with 500).
pub async fn serve<F, Fut>(listener: TcpListener, web: WebConfig, scrape: F)
where
    F: Fn(Format) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<String, String>> + Send + 'static,
{
    let tls = web.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let web = Arc::new(web);
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let (scrape, web, tls) = (scrape.clone(), web.clone(), tls.clone());
                tokio::spawn(async move {
                    let result = match tls {
                        None => connection(stream, web, scrape).await,
                        Some(tls) => match tokio::time::timeout(READ_TIMEOUT, tls.accept(stream)).await {
                            // Plain HTTP to this port ends here: it is no TLS handshake.
                            Ok(Ok(stream)) => connection(stream, web, scrape).await,
                            Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
                            Err(_) => Err("TLS handshake timed out".to_string()),
                        },
                    };
                    if let Err(e) = result {
                        log::debug!("metrics connection from {peer}: {e}");
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

async fn connection<S, F, Fut>(stream: S, web: Arc<WebConfig>, scrape: F) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Format) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<String, String>> + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| {
        let (web, scrape) = (web.clone(), scrape.clone());
        async move { Ok::<_, Infallible>(answer(request, &web, scrape).await) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(READ_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        // As the hand-written server did and scripts may match: `Content-Type`, not `content-type`.
        .title_case_headers(true)
        .serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(CONNECTION_LIFETIME, connection).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err("connection open too long, closed".to_string()),
    }
}

async fn answer<F, Fut>(request: Request<Incoming>, web: &WebConfig, scrape: F) -> Response<Full<Bytes>>
where
    F: Fn(Format) -> Fut,
    Fut: Future<Output = Result<String, String>>,
{
    if let Some(users) = &web.users {
        let users = users.clone();
        let header = request.headers().get(AUTHORIZATION).map(|v| v.as_bytes().to_vec());
        // bcrypt takes tens of milliseconds on purpose: not on the runtime's thread.
        let ok = tokio::task::spawn_blocking(move || users.check(header.as_deref())).await.unwrap_or(false);
        if !ok {
            let mut r =
                text(StatusCode::UNAUTHORIZED, "unauthorized: give the user and password of the web configuration\n");
            r.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
            return r;
        }
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    // Prometheus may add query parameters; they select nothing here. hyper leaves the body out
    // of the answer to HEAD and keeps its Content-Length.
    match request.uri().path() {
        "/metrics" => {
            let accept = request.headers().get_all(ACCEPT).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>();
            let format = negotiate(&accept.join(","));
            match scrape(format).await {
                Ok(body) => {
                    let mut r = Response::new(Full::new(Bytes::from(body)));
                    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
                    r
                }
                Err(e) => {
                    log::warn!("metrics scrape failed: {e}");
                    text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n"))
                }
            }
        }
        "/" => text(StatusCode::OK, "edge-ctl serve: metrics at /metrics\n"),
        _ => text(StatusCode::NOT_FOUND, "not found: metrics are at /metrics\n"),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// The format an Accept header prefers: OpenMetrics when it ranks `application/openmetrics-text`
/// (version 1.0.0, 0.0.1 or unspecified, which this text satisfies) above every other media
/// range it accepts, or equal to one listed after it; else the text format 0.0.4, which every
/// scraper takes (and which answers a missing header or `*/*`).
pub fn negotiate(accept: &str) -> Format {
    let mut openmetrics: Option<(f32, usize)> = None;
    let mut other: Option<(f32, usize)> = None;
    for (position, range) in accept.split(',').enumerate() {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        if media.is_empty() {
            continue;
        }
        let mut q = 1.0f32;
        let mut version = None;
        for param in parts {
            let Some((k, v)) = param.split_once('=') else { continue };
            let v = v.trim().trim_matches('"');
            match k.trim().to_ascii_lowercase().as_str() {
                "q" => q = v.parse().unwrap_or(0.0),
                "version" => version = Some(v.to_string()),
                _ => {}
            }
        }
        if q <= 0.0 {
            continue;
        }
        let slot = if media == "application/openmetrics-text" {
            if !matches!(version.as_deref(), None | Some("1.0.0" | "0.0.1")) {
                continue;
            }
            &mut openmetrics
        } else {
            &mut other
        };
        // Best quality first; on equal quality the earlier range.
        if slot.is_none_or(|(best, _)| q > best) {
            *slot = Some((q, position));
        }
    }
    match (openmetrics, other) {
        (Some((om, om_at)), Some((q, at))) if om > q || (om == q && om_at < at) => Format::OpenMetrics,
        (Some(_), None) => Format::OpenMetrics,
        _ => Format::Prometheus,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_the_format_prometheus_asks_for() {
        // Prometheus 2.x and 3.x defaults.
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,\
                          text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(negotiate(prometheus), Format::OpenMetrics);
        // scrape_protocols with the text format first.
        let text_first = "text/plain;version=0.0.4;q=0.9,application/openmetrics-text;version=1.0.0;q=0.8,*/*;q=0.1";
        assert_eq!(negotiate(text_first), Format::Prometheus);
        assert_eq!(negotiate("application/openmetrics-text"), Format::OpenMetrics);
        assert_eq!(negotiate("Application/OpenMetrics-Text; Version=\"1.0.0\""), Format::OpenMetrics);
    }

    #[test]
    fn anything_else_gets_the_text_format() {
        assert_eq!(negotiate(""), Format::Prometheus);
        assert_eq!(negotiate("*/*"), Format::Prometheus);
        assert_eq!(negotiate("text/plain"), Format::Prometheus);
        // A version of OpenMetrics this text is not.
        assert_eq!(negotiate("application/openmetrics-text;version=2.0.0"), Format::Prometheus);
        // Refused outright.
        assert_eq!(negotiate("application/openmetrics-text;q=0,*/*"), Format::Prometheus);
        // Ranked below the text format.
        assert_eq!(negotiate("application/openmetrics-text;q=0.3,text/plain;q=0.5"), Format::Prometheus);
        // Equal rank: the one listed first.
        assert_eq!(negotiate("*/*,application/openmetrics-text"), Format::Prometheus);
        assert_eq!(negotiate("application/openmetrics-text,*/*"), Format::OpenMetrics);
        // A malformed q-value counts as refusal.
        assert_eq!(negotiate("application/openmetrics-text;q=high,text/plain"), Format::Prometheus);
    }
}
