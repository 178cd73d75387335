//! Prometheus metrics: the text exposition format (version 0.0.4) rendered
//! from a [`Status`] snapshot, and a minimal HTTP/1.1 responder for
//! `GET /metrics`.
//!
//! The HTTP side reads at most [`MAX_REQUEST`] bytes of request head, answers
//! one request and closes the connection. Anything it can't parse gets a
//! `400`, another method a `405`, another path a `404`; nothing a client
//! sends can make it fail other than by closing its connection. The caller
//! ([`crate::control::Ops`]) bounds the time.

use std::fmt::Write as _;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::status::{Status, UplinkStatus};

/// Largest request head read, in bytes.
pub const MAX_REQUEST: usize = 8192;

/// What to answer a request with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /metrics` (or `HEAD`): the metrics.
    Metrics,
    /// A path other than `/metrics`.
    NotFound,
    /// A method other than GET or HEAD.
    MethodNotAllowed,
    /// Not an HTTP/1.x request line, or a head over [`MAX_REQUEST`].
    BadRequest,
}

/// Routes a request by its request line; `head` is what was read, up to and
/// including the blank line that ends the head if `complete`.
pub fn route(head: &[u8], complete: bool) -> Route {
    if !complete {
        return Route::BadRequest;
    }
    let Ok(text) = std::str::from_utf8(head) else {
        return Route::BadRequest;
    };
    let line = text.split("\r\n").next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1")
        || method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || !target.starts_with('/')
    {
        return Route::BadRequest;
    }
    if method != "GET" && method != "HEAD" {
        return Route::MethodNotAllowed;
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    if path == "/metrics" {
        Route::Metrics
    } else {
        Route::NotFound
    }
}

/// Where the request head ends (after `\r\n\r\n`), if it does.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// The full response for `route`.
pub fn response(route: Route, head_only: bool, status: &Status) -> Vec<u8> {
    let (code, reason, ctype, body, extra) = match route {
        Route::Metrics => (
            200,
            "OK",
            "text/plain; version=0.0.4; charset=utf-8",
            render(status),
            "",
        ),
        Route::NotFound => (
            404,
            "Not Found",
            "text/plain",
            "not found; try /metrics\n".into(),
            "",
        ),
        Route::MethodNotAllowed => (
            405,
            "Method Not Allowed",
            "text/plain",
            "method not allowed\n".into(),
            "Allow: GET, HEAD\r\n",
        ),
        Route::BadRequest => (400, "Bad Request", "text/plain", "bad request\n".into(), ""),
    };
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// Reads one request from `s` and answers it.
pub async fn serve_http(mut s: TcpStream, status: &Status) -> std::io::Result<()> {
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut len = 0;
    let end = loop {
        if let Some(end) = head_end(&buf[..len]) {
            break Some(end);
        }
        if len == buf.len() {
            break None;
        }
        let n = s.read(&mut buf[len..]).await?;
        if n == 0 {
            break None;
        }
        len += n;
    };
    let head = &buf[..end.unwrap_or(len)];
    let route = route(head, end.is_some());
    let head_only = route == Route::Metrics && head.starts_with(b"HEAD ");
    s.write_all(&response(route, head_only, status)).await?;
    s.shutdown().await
}

/// Escapes a label value: backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Builds the exposition text, one metric family at a time.
struct Text(String);

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// The Prometheus text exposition of a snapshot.
pub fn render(s: &Status) -> String {
    let mut t = Text(String::new());
    t.family(
        "lanbridge_info",
        "gauge",
        "The role and version of this lanbridge process.",
    );
    t.sample(
        "lanbridge_info",
        &[("role", s.role.as_str()), ("version", &s.version)],
        1,
    );
    t.one(
        "lanbridge_uptime_seconds",
        "gauge",
        "Seconds since this process started its role.",
        s.uptime_seconds,
    );
    t.family(
        "lanbridge_drops_total",
        "counter",
        "Datagrams and frames dropped, by reason.",
    );
    for (reason, n) in &s.drops {
        t.sample("lanbridge_drops_total", &[("reason", reason)], n);
    }
    if let Some(r) = &s.relay {
        t.family(
            "lanbridge_relay_peers",
            "gauge",
            "Registered peers, by network.",
        );
        for n in &r.networks {
            t.sample("lanbridge_relay_peers", &[("network", &n.id)], n.peers);
        }
        t.one(
            "lanbridge_relay_datagrams_received_total",
            "counter",
            "Datagrams the relay received.",
            r.datagrams_received,
        );
        t.one(
            "lanbridge_relay_datagrams_sent_total",
            "counter",
            "Datagrams the relay sent (a forward counts once per destination).",
            r.datagrams_sent,
        );
        t.one(
            "lanbridge_relay_registrations_total",
            "counter",
            "Peer registrations, including re-registrations after a timeout.",
            r.registrations,
        );
        t.one(
            "lanbridge_relay_timeouts_total",
            "counter",
            "Peers forgotten for silence.",
            r.timeouts,
        );
        t.one(
            "lanbridge_relay_handshakes_total",
            "counter",
            "Member handshakes completed (joins and key rotations).",
            r.handshakes,
        );
        t.one(
            "lanbridge_relay_cookies_sent_total",
            "counter",
            "Cookie replies sent to initiations without a valid cookie under load.",
            r.cookies_sent,
        );
        t.one(
            "lanbridge_relay_cookie_mode",
            "gauge",
            "1 while initiations need a cookie (handshake load), else 0.",
            u8::from(r.cookie_mode),
        );
        t.family(
            "lanbridge_relay_member_session_age_seconds",
            "gauge",
            "Age of each member's session keys with the relay (they rotate every 2 minutes).",
        );
        for p in &r.peers {
            t.sample(
                "lanbridge_relay_member_session_age_seconds",
                &[("network", &p.network), ("member", &p.member)],
                p.session_age_seconds,
            );
        }
    }
    if let Some(e) = &s.edge {
        uplink(&mut t, &e.uplink);
    }
    if let Some(b) = &s.bridge {
        t.one(
            "lanbridge_bridge_ip_entries",
            "gauge",
            "Virtual hosts' IP to MAC entries.",
            b.ip_table.len(),
        );
        t.one(
            "lanbridge_bridge_lan_macs",
            "gauge",
            "MACs seen on the LAN.",
            b.lan_macs.len(),
        );
        t.one(
            "lanbridge_bridge_lan_ips",
            "gauge",
            "IPs seen live on the LAN.",
            b.lan_ips.len(),
        );
        t.one(
            "lanbridge_bridge_overlay_macs",
            "gauge",
            "MACs seen as sources from the overlay (no LAN host may use them).",
            b.overlay_macs.len(),
        );
        let n = &b.nat;
        t.family(
            "lanbridge_bridge_forwarded_total",
            "counter",
            "Frames passed by the bridge, by direction.",
        );
        for (dir, v) in [
            ("lan_to_overlay", n.lan_forwarded),
            ("overlay_to_lan", n.overlay_forwarded),
        ] {
            t.sample("lanbridge_bridge_forwarded_total", &[("direction", dir)], v);
        }
        t.family(
            "lanbridge_bridge_evictions_total",
            "counter",
            "Entries evicted from a full table, by table.",
        );
        for (table, v) in [
            ("ip", n.ip_evictions),
            ("lan_mac", n.lan_mac_evictions),
            ("lan_ip", n.lan_ip_evictions),
            ("overlay_mac", n.overlay_mac_evictions),
        ] {
            t.sample("lanbridge_bridge_evictions_total", &[("table", table)], v);
        }
        t.one(
            "lanbridge_bridge_dhcp_broadcast_set_total",
            "counter",
            "DHCP requests given the broadcast flag.",
            n.dhcp_broadcast_set,
        );
        t.one(
            "lanbridge_bridge_ndp_rewritten_total",
            "counter",
            "IPv6 neighbour-discovery messages rewritten.",
            n.ndp_rewritten,
        );
        t.one(
            "lanbridge_bridge_probes_sent_total",
            "counter",
            "ARP probes and DAD neighbour solicitations put on the LAN for claimed addresses.",
            n.probes_sent,
        );
        t.family(
            "lanbridge_bridge_claims_total",
            "counter",
            "Addresses claimed from the overlay and probed for, by outcome.",
        );
        for (result, v) in [("granted", n.claims_granted), ("refused", n.claims_refused)] {
            t.sample("lanbridge_bridge_claims_total", &[("result", result)], v);
        }
        t.one(
            "lanbridge_bridge_claims_pending",
            "gauge",
            "Claimed addresses being probed for.",
            n.claims_pending,
        );
        t.family(
            "lanbridge_bridge_host_frames_total",
            "counter",
            "Host access: frames between the host TAP and the overlay, by direction.",
        );
        for (dir, v) in [
            ("to_host", n.overlay_to_host),
            ("from_host", n.host_to_overlay),
        ] {
            t.sample(
                "lanbridge_bridge_host_frames_total",
                &[("direction", dir)],
                v,
            );
        }
        t.one(
            "lanbridge_bridge_host_answers_total",
            "counter",
            "Host access: ARP requests and neighbour solicitations for the host answered by the bridge.",
            n.host_answers,
        );
        t.one(
            "lanbridge_bridge_host_routes",
            "gauge",
            "Host access: host routes to virtual addresses through the host TAP.",
            n.host_routes,
        );
        if let Some(u) = &b.uplink {
            uplink(&mut t, u);
        }
    }
    t.0
}

/// Metrics of a relay connection.
fn uplink(t: &mut Text, u: &UplinkStatus) {
    t.one(
        "lanbridge_registered",
        "gauge",
        "1 while registered with the relay, else 0.",
        u8::from(u.registered),
    );
    t.one(
        "lanbridge_registrations_total",
        "counter",
        "Times this process (re-)registered with the relay.",
        u.registrations,
    );
    t.family(
        "lanbridge_handshakes_total",
        "counter",
        "Completed handshakes, with the relay and with members.",
    );
    t.sample(
        "lanbridge_handshakes_total",
        &[("with", "relay")],
        u.uplink_handshakes,
    );
    t.sample(
        "lanbridge_handshakes_total",
        &[("with", "member")],
        u.member_handshakes,
    );
    t.one(
        "lanbridge_rekeys_total",
        "counter",
        "Member sessions whose keys were replaced by a new handshake.",
        u.rekeys,
    );
    t.one(
        "lanbridge_members",
        "gauge",
        "Other members of the network, as the relay lists them.",
        u.members.len() as u64,
    );
    t.one(
        "lanbridge_member_sessions",
        "gauge",
        "Members with session keys in use.",
        u.members
            .iter()
            .filter(|m| m.session_age_seconds.is_some())
            .count() as u64,
    );
    t.one(
        "lanbridge_members_direct",
        "gauge",
        "Members whose frames go directly to them, not through the relay.",
        u.members
            .iter()
            .filter(|m| m.path_address.is_some())
            .count() as u64,
    );
    t.one(
        "lanbridge_path_changes_total",
        "counter",
        "Paths to members that changed, relay to direct or back.",
        u.path_changes,
    );
    t.family(
        "lanbridge_frames_total",
        "counter",
        "Frames exchanged with the relay, by direction.",
    );
    t.sample(
        "lanbridge_frames_total",
        &[("direction", "in")],
        u.frames_in,
    );
    t.sample(
        "lanbridge_frames_total",
        &[("direction", "out")],
        u.frames_out,
    );
    t.family(
        "lanbridge_offload_frames_total",
        "counter",
        "Super-frames cut into segments to send (out) and rebuilt from received segments (in).",
    );
    t.sample(
        "lanbridge_offload_frames_total",
        &[("direction", "in")],
        u.offload_frames_in,
    );
    t.sample(
        "lanbridge_offload_frames_total",
        &[("direction", "out")],
        u.offload_frames_out,
    );
    t.family(
        "lanbridge_mss_clamped_total",
        "counter",
        "TCP SYNs whose MSS option was lowered so that a full segment fits one datagram.",
    );
    t.sample("lanbridge_mss_clamped_total", &[], u.mss_clamped);
    t.family(
        "lanbridge_datagrams_total",
        "counter",
        "Datagrams exchanged with the relay, by direction.",
    );
    t.sample(
        "lanbridge_datagrams_total",
        &[("direction", "in")],
        u.datagrams_in,
    );
    t.sample(
        "lanbridge_datagrams_total",
        &[("direction", "out")],
        u.datagrams_out,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::tests::{bridge_fixture, edge_fixture, relay_fixture};

    #[test]
    fn relay_metrics() {
        insta::assert_snapshot!(render(&relay_fixture()));
    }

    #[test]
    fn bridge_metrics() {
        insta::assert_snapshot!(render(&bridge_fixture()));
    }

    #[test]
    fn edge_metrics() {
        insta::assert_snapshot!(render(&edge_fixture()));
    }

    #[test]
    fn every_sample_has_help_and_type() {
        for s in [relay_fixture(), bridge_fixture(), edge_fixture()] {
            let text = render(&s);
            for line in text.lines().filter(|l| !l.starts_with('#')) {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(text.contains(&format!("# HELP {name} ")), "{name}");
                assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
            }
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn routes_requests() {
        let r = |s: &str| route(s.as_bytes(), true);
        assert_eq!(
            r("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics
        );
        assert_eq!(r("GET /metrics?name[]=x HTTP/1.0\r\n\r\n"), Route::Metrics);
        assert_eq!(r("HEAD /metrics HTTP/1.1\r\n\r\n"), Route::Metrics);
        assert_eq!(r("GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(r("GET /metricsx HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(r("POST /metrics HTTP/1.1\r\n\r\n"), Route::MethodNotAllowed);
        assert_eq!(r("DELETE / HTTP/1.1\r\n\r\n"), Route::MethodNotAllowed);
    }

    #[test]
    fn rejects_garbage_and_oversized_requests() {
        let r = |s: &[u8]| route(s, true);
        assert_eq!(r(b""), Route::BadRequest);
        assert_eq!(r(b"\r\n\r\n"), Route::BadRequest);
        assert_eq!(r(b"GET\r\n\r\n"), Route::BadRequest);
        assert_eq!(r(b"GET /metrics\r\n\r\n"), Route::BadRequest);
        assert_eq!(r(b"GET /metrics HTTP/2\r\n\r\n"), Route::BadRequest);
        assert_eq!(r(b"GET  /metrics HTTP/1.1\r\n\r\n"), Route::BadRequest);
        assert_eq!(r(b"GET metrics HTTP/1.1\r\n\r\n"), Route::BadRequest);
        assert_eq!(r(b"get /metrics HTTP/1.1\r\n\r\n"), Route::BadRequest);
        assert_eq!(r(b"GET /metrics HTTP/1.1 x\r\n\r\n"), Route::BadRequest);
        assert_eq!(r(b"\xff\xfe /metrics HTTP/1.1\r\n\r\n"), Route::BadRequest);
        assert_eq!(
            r(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
            Route::BadRequest
        );
        // A head that never ends within the limit.
        let big = format!("GET /metrics HTTP/1.1\r\nX: {}", "a".repeat(MAX_REQUEST));
        assert_eq!(
            route(&big.as_bytes()[..MAX_REQUEST], false),
            Route::BadRequest
        );
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
    }

    #[test]
    fn responses_have_status_line_type_and_length() {
        let s = relay_fixture();
        let ok = String::from_utf8(response(Route::Metrics, false, &s)).unwrap();
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("Content-Type: text/plain; version=0.0.4"),
            "{ok}"
        );
        let body = ok.split_once("\r\n\r\n").unwrap().1;
        assert!(ok.contains(&format!("Content-Length: {}\r\n", body.len())));
        let head = String::from_utf8(response(Route::Metrics, true, &s)).unwrap();
        assert!(head.ends_with("\r\n\r\n"));
        for (route, line) in [
            (Route::NotFound, "HTTP/1.1 404 "),
            (Route::BadRequest, "HTTP/1.1 400 "),
            (Route::MethodNotAllowed, "HTTP/1.1 405 "),
        ] {
            let text = String::from_utf8(response(route, false, &s)).unwrap();
            assert!(text.starts_with(line), "{text}");
        }
    }
}
