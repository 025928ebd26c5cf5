//! The status server's HTTP: a small HTTP/1.0 server (one request per
//! connection) built to meet hostile clients.
//!
//! - Bounded: the request head is at most [`MAX_HEAD`] bytes and must arrive
//!   within [`READ_DEADLINE`]; no request body is ever read; the answer must
//!   be taken within [`WRITE_DEADLINE`]. At most [`MAX_CLIENTS`] requests are
//!   answered at once, each on its own thread; one more is told `503` at
//!   once: a slow client holds one place for a few seconds, never the others;
//!   one token has at most [`MAX_PER_TOKEN`] requests answered at once
//!   (more get `429`).
//! - Strict paths: a path is matched byte for byte against the few the
//!   server has (`/`, `/tenants`, `/tenants.json`, `/tenants/NAME`,
//!   `/tenants/NAME.json`), with NAME a valid ruleset tenant name. Nothing is
//!   decoded: a `%`, a `..`, a dot segment, an upper-case letter, a query, a
//!   non-ASCII look-alike is simply no path (404).
//! - Credentials first: without a valid token every request is `401`, so
//!   nothing can be learnt without one; a tenant's token opens only its own
//!   pages, and any other tenant's page — existing or not — is the same
//!   `404`. Tokens come as `Authorization: Bearer <token>` or as the
//!   password of HTTP Basic authentication (what a browser asks for).

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use base64::Engine as _;

use super::{
    drops::DropSamples,
    html,
    tokens::{MAX_TOKEN, Principal, TokensFile},
    view,
};
use crate::{Cancel, ControlError, Gateway};

/// Most requests answered at once.
pub const MAX_CLIENTS: usize = 32;
/// The request head must arrive within this time.
pub const READ_DEADLINE: Duration = Duration::from_secs(5);
/// The answer must be taken within this time.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(10);
/// Longest request head.
pub const MAX_HEAD: usize = 8192;

/// A page of the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/`: the reader's own page.
    Home,
    /// `/tenants`: the operator's page.
    Operator,
    /// `/tenants.json`.
    OperatorJson,
    /// `/tenants/NAME`.
    Tenant(String),
    /// `/tenants/NAME.json`.
    TenantJson(String),
}

/// The route of a request target, matched exactly (`None`: no such page).
pub fn route(target: &str) -> Option<Route> {
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"/._-".contains(&b);
    if !target.bytes().all(allowed) {
        return None;
    }
    match target {
        "/" => return Some(Route::Home),
        "/tenants" => return Some(Route::Operator),
        "/tenants.json" => return Some(Route::OperatorJson),
        _ => {}
    }
    let rest = target.strip_prefix("/tenants/")?;
    let (name, json) = match rest.strip_suffix(".json") {
        Some(n) => (n, true),
        None => (rest, false),
    };
    if !view::valid_tenant_name(name) {
        return None;
    }
    Some(if json {
        Route::TenantJson(name.to_owned())
    } else {
        Route::Tenant(name.to_owned())
    })
}

/// A parsed request head.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `HEAD`, …
    pub method: String,
    /// The request target as sent.
    pub target: String,
    /// The token presented, if any.
    pub token: Option<String>,
}

/// Parses a request head (`Err`: the status line to answer with).
pub fn parse_request(head: &str) -> Result<Request, &'static str> {
    const BAD: &str = "400 Bad Request";
    let mut lines = head.split("\r\n");
    let first = lines.next().ok_or(BAD)?;
    let mut words = first.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Err(BAD);
    };
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") || method.is_empty() || target.is_empty() {
        return Err(BAD);
    }
    let mut token = None;
    let mut seen_auth = false;
    for line in lines.take_while(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').ok_or(BAD)?;
        if !name.eq_ignore_ascii_case("authorization") {
            continue;
        }
        if seen_auth {
            return Err(BAD);
        }
        seen_auth = true;
        token = token_of(value.trim());
    }
    Ok(Request {
        method: method.to_owned(),
        target: target.to_owned(),
        token,
    })
}

/// The token of an `Authorization` value: `Bearer <token>`, or the password
/// of `Basic <base64(user:password)>`.
fn token_of(value: &str) -> Option<String> {
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    let token = if scheme.eq_ignore_ascii_case("bearer") {
        rest.to_owned()
    } else if scheme.eq_ignore_ascii_case("basic") {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        text.split_once(':')?.1.to_owned()
    } else {
        return None;
    };
    (!token.is_empty() && token.len() <= MAX_TOKEN).then_some(token)
}

/// An answer.
#[derive(Debug)]
pub struct Response {
    /// `200 OK`, …
    pub status: &'static str,
    /// Content type.
    pub content_type: &'static str,
    /// Extra header lines (`Name: value`).
    pub headers: Vec<String>,
    /// Body (not sent to `HEAD`).
    pub body: String,
}

impl Response {
    fn text(status: &'static str, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: format!("{body}\n"),
        }
    }

    fn not_found() -> Response {
        Response::text("404 Not Found", "no such page")
    }
}

/// Requests one token may have answered at once: a page of a large
/// gateway takes a tenth of a second to build, and one tenant refreshing
/// hard must not hold every place.
pub const MAX_PER_TOKEN: usize = 4;

/// Requests being answered, per principal.
#[derive(Debug, Default)]
pub struct InFlight(Mutex<HashMap<String, usize>>);

/// A place taken in [`InFlight`], given back on drop.
#[derive(Debug)]
pub struct Place<'a> {
    of: &'a InFlight,
    key: String,
}

impl InFlight {
    /// A place for a request of `who`, unless it has [`MAX_PER_TOKEN`]
    /// being answered already.
    pub fn enter(&self, who: &Principal) -> Option<Place<'_>> {
        let key = match who {
            Principal::Operator => String::new(),
            Principal::Tenant(t) => t.clone(),
        };
        let mut map = self.0.lock().ok()?;
        let n = map.entry(key.clone()).or_default();
        if *n >= MAX_PER_TOKEN {
            return None;
        }
        *n += 1;
        Some(Place { of: self, key })
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.of.0.lock()
            && let Some(n) = map.get_mut(&self.key)
        {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// What the server answers to `req`.
pub fn respond(
    req: &Request,
    tokens: &TokensFile,
    gateway: &Gateway,
    drops: Option<&DropSamples>,
    in_flight: &InFlight,
) -> Response {
    if req.method != "GET" && req.method != "HEAD" {
        let mut r = Response::text("405 Method Not Allowed", "GET or HEAD only");
        r.headers.push("Allow: GET, HEAD".into());
        return r;
    }
    let principal = match tokens.current() {
        Ok(set) => req.token.as_deref().and_then(|t| set.principal(t)),
        Err(_) => {
            return Response::text(
                "503 Service Unavailable",
                "the status server is misconfigured",
            );
        }
    };
    let Some(principal) = principal else {
        let mut r = Response::text("401 Unauthorized", "a token is needed");
        r.headers
            .push("WWW-Authenticate: Basic realm=\"fluxgate status\", charset=\"UTF-8\"".into());
        return r;
    };
    let Some(_place) = in_flight.enter(&principal) else {
        let mut r = Response::text("429 Too Many Requests", "too many requests at once");
        r.headers.push("Retry-After: 1".into());
        return r;
    };
    let Some(route) = route(&req.target) else {
        return Response::not_found();
    };
    let may_read = |name: &str| match &principal {
        Principal::Operator => true,
        Principal::Tenant(t) => t == name,
    };
    let result = match (&route, &principal) {
        (Route::Home, Principal::Tenant(t)) => Ok(redirect(&format!("/tenants/{t}"))),
        (Route::Home, Principal::Operator) => Ok(redirect("/tenants")),
        (Route::Operator | Route::OperatorJson, Principal::Tenant(_)) => Ok(Response::not_found()),
        (Route::Operator, Principal::Operator) => view::operator_page(gateway).map(|p| Response {
            status: "200 OK",
            content_type: "text/html; charset=utf-8",
            headers: Vec::new(),
            body: html::operator(&p),
        }),
        (Route::OperatorJson, Principal::Operator) => view::operator_page(gateway).map(json),
        (Route::Tenant(name) | Route::TenantJson(name), _) if !may_read(name) => {
            Ok(Response::not_found())
        }
        (Route::Tenant(name), _) => view::tenant_page(gateway, name, drops).map(|p| match p {
            Some(p) => Response {
                status: "200 OK",
                content_type: "text/html; charset=utf-8",
                headers: Vec::new(),
                body: html::tenant(&p),
            },
            None => Response::not_found(),
        }),
        (Route::TenantJson(name), _) => view::tenant_page(gateway, name, drops)
            .map(|p| p.map_or_else(Response::not_found, json)),
    };
    result.unwrap_or_else(|e: ControlError| {
        tracing::warn!("status: page failed: {e}");
        Response::text("500 Internal Server Error", "the page could not be built")
    })
}

fn redirect(to: &str) -> Response {
    let mut r = Response::text("303 See Other", to);
    r.headers.push(format!("Location: {to}"));
    r
}

fn json<T: serde::Serialize>(value: T) -> Response {
    match serde_json::to_string_pretty(&value) {
        Ok(mut body) => {
            body.push('\n');
            Response {
                status: "200 OK",
                content_type: "application/json",
                headers: Vec::new(),
                body,
            }
        }
        Err(e) => Response::text("500 Internal Server Error", &format!("json: {e}")),
    }
}

/// Serves the status pages on `listener` until `stop` is cancelled (see
/// the module docs); requests being answered then are finished first. An
/// `accept` error is logged and serving goes on.
pub fn serve(
    listener: &TcpListener,
    gateway: &Gateway,
    tokens: &TokensFile,
    drops: Option<&DropSamples>,
    stop: &Cancel,
) -> Result<(), ControlError> {
    let busy = Arc::new(AtomicUsize::new(0));
    let in_flight = InFlight::default();
    let in_flight = &in_flight;
    std::thread::scope(|scope| {
        while !stop.is_cancelled() {
            if !readable(listener, Duration::from_millis(200)) {
                continue;
            }
            let mut stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("status: accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            if busy.load(Ordering::Acquire) >= MAX_CLIENTS {
                // Full: say so at once rather than keep this one waiting
                // behind slow clients.
                let r = Response::text("503 Service Unavailable", "busy, try again");
                let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
                let _ = write_response(&mut stream, &r, false);
                continue;
            }
            busy.fetch_add(1, Ordering::AcqRel);
            let busy = Arc::clone(&busy);
            scope.spawn(move || {
                if let Err(e) = answer(stream, gateway, tokens, drops, in_flight) {
                    tracing::debug!("status: client dropped: {e}");
                }
                busy.fetch_sub(1, Ordering::AcqRel);
            });
        }
        Ok(())
    })
}

/// Whether `listener` has a connection to accept within `timeout`.
fn readable(listener: &TcpListener, timeout: Duration) -> bool {
    use std::os::fd::AsRawFd;
    let mut pollfd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid, initialised entry that outlives the call.
    let ready = unsafe { libc::poll(&mut pollfd, 1, millis) };
    ready > 0
}

/// Reads the request head within [`READ_DEADLINE`] (`Ok(None)`: too long).
fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let deadline = Instant::now() + READ_DEADLINE;
    let mut buf = vec![0u8; MAX_HEAD];
    let mut len = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "request deadline",
            ));
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut buf[len..])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before the end of the request head",
            ));
        }
        len += n;
        if let Some(end) = buf[..len].windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(end + 2);
            return Ok(Some(buf));
        }
        if len == buf.len() {
            return Ok(None);
        }
    }
}

fn answer(
    mut stream: TcpStream,
    gateway: &Gateway,
    tokens: &TokensFile,
    drops: Option<&DropSamples>,
    in_flight: &InFlight,
) -> std::io::Result<()> {
    stream.set_write_timeout(Some(WRITE_DEADLINE))?;
    let (response, head_only) = match read_head(&mut stream)? {
        None => (
            Response::text("431 Request Header Fields Too Large", "request too large"),
            false,
        ),
        Some(raw) => match std::str::from_utf8(&raw)
            .map_err(|_| "400 Bad Request")
            .and_then(parse_request)
        {
            Ok(req) => (
                respond(&req, tokens, gateway, drops, in_flight),
                req.method == "HEAD",
            ),
            Err(status) => (Response::text(status, "bad request"), false),
        },
    };
    write_response(&mut stream, &response, head_only)?;
    // A lingering close: a client whose request we did not read to the end
    // would otherwise get a reset that can discard our answer.
    stream.shutdown(std::net::Shutdown::Write)?;
    stream.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    Ok(())
}

fn write_response(stream: &mut TcpStream, r: &Response, head_only: bool) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.0 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\n\
         Referrer-Policy: no-referrer\r\n\
         Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'\r\n",
        r.status,
        r.content_type,
        r.body.len()
    );
    for h in &r.headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    if !head_only {
        out.push_str(&r.body);
    }
    stream.write_all(out.as_bytes())?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exact_paths_route() {
        assert_eq!(route("/"), Some(Route::Home));
        assert_eq!(route("/tenants"), Some(Route::Operator));
        assert_eq!(route("/tenants.json"), Some(Route::OperatorJson));
        assert_eq!(route("/tenants/acme"), Some(Route::Tenant("acme".into())));
        assert_eq!(
            route("/tenants/acme.json"),
            Some(Route::TenantJson("acme".into()))
        );
        for bad in [
            "/tenants/acme/",
            "/tenants//acme",
            "/tenants/../tenants/acme",
            "/tenants/./acme",
            "/tenants/acme/..",
            "/tenants/%61cme",
            "/tenants%2facme",
            "/tenants/acme%2f..%2fglobex",
            "/tenants/ACME",
            "/Tenants/acme",
            "/tenants/ac\u{0430}me",
            "/tenants/acme?x=1",
            "/tenants/acme#x",
            "/tenants/acme.json.json",
            "/tenants/acme;x",
            "/tenants/acme\\..\\globex",
            "/tenants/gateway",
            "/tenants/",
            "/tenants/.json",
            "http://host/tenants/acme",
            "*",
            "//tenants/acme",
        ] {
            assert_eq!(route(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn one_token_holds_a_few_places_at_most() {
        let f = InFlight::default();
        let acme = Principal::Tenant("acme".into());
        let held: Vec<Place<'_>> = (0..MAX_PER_TOKEN)
            .map(|_| f.enter(&acme).expect("place"))
            .collect();
        assert!(f.enter(&acme).is_none(), "acme is at its limit");
        assert!(f.enter(&Principal::Tenant("globex".into())).is_some());
        assert!(f.enter(&Principal::Operator).is_some());
        drop(held);
        assert!(f.enter(&acme).is_some(), "places come back");
    }

    #[test]
    fn requests_parse_with_their_token() {
        let r = parse_request(
            "GET /tenants/acme HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n",
        )
        .expect("parse");
        assert_eq!(r.method, "GET");
        assert_eq!(r.target, "/tenants/acme");
        assert_eq!(r.token.as_deref(), Some("s3cret"));
        // Basic: user `acme`, password `s3cret`.
        let basic = base64::engine::general_purpose::STANDARD.encode("acme:s3cret");
        let r = parse_request(&format!(
            "GET / HTTP/1.0\r\nauthorization: Basic {basic}\r\n"
        ))
        .expect("parse");
        assert_eq!(r.token.as_deref(), Some("s3cret"));
        for bad in [
            "GET /tenants/acme\r\n",
            "GET  /tenants/acme HTTP/1.1\r\n",
            "GET /tenants/acme HTTP/2\r\n",
            "GET /a HTTP/1.1\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\n",
            "GET /a HTTP/1.1\r\nno colon here\r\n",
        ] {
            assert!(parse_request(bad).is_err(), "{bad:?}");
        }
        let r = parse_request("GET / HTTP/1.1\r\nAuthorization: Digest x\r\n").expect("parse");
        assert_eq!(r.token, None);
    }
}
