//! Content types for gateway responses (the file name's extension first, then the first bytes,
//! as Go's `http.DetectContentType` does for Kubo) and the HTML listing of a directory.

use crate::unixfs::DecodedLink;
use cid::Cid;

fn by_extension(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "txt" | "md" => "text/plain; charset=utf-8",
        "xml" => "text/xml; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" | "tgz" => "application/gzip",
        "tar" => "application/x-tar",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "woff2" => "font/woff2",
        _ => return None,
    })
}

fn by_content(data: &[u8]) -> &'static str {
    let starts = |p: &[u8]| data.starts_with(p);
    let trimmed: Vec<u8> = data.iter().skip_while(|b| b.is_ascii_whitespace()).take(16).map(|b| b.to_ascii_lowercase()).collect();
    if trimmed.starts_with(b"<!doctype html") || trimmed.starts_with(b"<html") || trimmed.starts_with(b"<head") || trimmed.starts_with(b"<body") {
        return "text/html; charset=utf-8";
    }
    // JSON stored as a file (whole within the bytes looked at): said so, as Kubo does.
    if (trimmed.starts_with(b"{") || trimmed.starts_with(b"[")) && serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok() {
        return "application/json";
    }
    if trimmed.starts_with(b"<?xml") {
        return "text/xml; charset=utf-8";
    }
    if starts(b"\x89PNG\r\n\x1a\n") {
        return "image/png";
    }
    if starts(b"\xff\xd8\xff") {
        return "image/jpeg";
    }
    if starts(b"GIF87a") || starts(b"GIF89a") {
        return "image/gif";
    }
    if starts(b"%PDF-") {
        return "application/pdf";
    }
    if starts(b"PK\x03\x04") {
        return "application/zip";
    }
    if starts(b"\x1f\x8b\x08") {
        return "application/x-gzip";
    }
    if starts(b"\0asm") {
        return "application/wasm";
    }
    // Text if nothing in it is a binary control byte (a cut multibyte sequence at the end is fine).
    let binary = data.iter().any(|&b| matches!(b, 0x00..=0x08 | 0x0b | 0x0e..=0x1a | 0x1c..=0x1f));
    if !binary && (std::str::from_utf8(data).is_ok() || std::str::from_utf8(&data[..data.len().saturating_sub(3)]).is_ok()) {
        "text/plain; charset=utf-8"
    } else {
        "application/octet-stream"
    }
}

pub fn content_type(name: &str, first_bytes: &[u8]) -> &'static str {
    by_extension(name).unwrap_or_else(|| by_content(first_bytes))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Part of a directory page's Etag: a new layout of the page is a new version.
pub const LISTING_VERSION: &str = concat!("af-", env!("CARGO_PKG_VERSION"), "-1");

/// Where a listing's links to whole paths point, by how the page was reached.
#[derive(Clone, Debug, Default)]
pub enum Origin {
    /// The path gateway: `/ipfs/<cid>/...` on this host.
    #[default]
    Path,
    /// A subdomain of this domain: the path gateway on the bare domain (`//<domain>/ipfs/...`),
    /// which sends each path to its own subdomain.
    Subdomain(String),
    /// A DNSLink host: its own paths (`//<host>/...`).
    DnsLink(String),
}

/// The content path (percent-encoded, e.g. `/ipfs/<cid>/a/b/`) as links to each step.
fn breadcrumbs(origin: &Origin, path: &str) -> String {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let Some((ns, rest)) = segs.split_first() else { return String::new() };
    let mut out = format!("/{}/", escape(ns));
    let mut href = String::new();
    for (i, seg) in rest.iter().enumerate() {
        href.push('/');
        href.push_str(seg);
        let link = match origin {
            Origin::Path => format!("/{ns}{href}"),
            Origin::Subdomain(d) => format!("//{d}/{ns}{href}"),
            // The DNSLink name is the host's root; the steps are its paths.
            Origin::DnsLink(h) => format!("//{h}/{}", href.trim_start_matches('/').split_once('/').map_or("", |(_, p)| p)),
        };
        if i > 0 {
            out.push('/');
        }
        out.push_str(&format!("<a href=\"{}\">{}</a>", escape(&link), escape(&super::percent_decode(seg).unwrap_or_else(|| seg.to_string()))));
    }
    out
}

/// A link to one entry's CID: the gateway's `/ipfs/<cid>?filename=<name>`, or on a DNSLink host
/// (which has no path gateway of its own) the CID inspector.
fn hash_link(origin: &Origin, cid: &Cid, name: &str) -> String {
    // The name as a path segment, then as a query value: encoded twice, as Kubo links it.
    let once: String = form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>().replace('+', "%20");
    let twice = once.replace('%', "%25");
    match origin {
        Origin::Path => format!("<a class=\"ipfs-hash\" translate=\"no\" href=\"/ipfs/{cid}?filename={twice}\">"),
        Origin::Subdomain(d) => format!("<a class=\"ipfs-hash\" translate=\"no\" href=\"//{d}/ipfs/{cid}?filename={twice}\">"),
        Origin::DnsLink(_) => format!("<a class=\"ipfs-hash\" translate=\"no\" href=\"https://cid.ipfs.tech/#{cid}\" target=\"_blank\" rel=\"noreferrer noopener\">"),
    }
}

/// An HTML page listing a directory's entries, with links relative to `path` (which ends in `/`).
pub fn listing(path: &str, (origin, content_path): (&Origin, &str), cid: &Cid, links: &[DecodedLink]) -> String {
    let mut rows = String::new();
    // Below the content's root (`/ipfs/<cid>/...`), a way up.
    if content_path.trim_end_matches('/').matches('/').count() > 2 {
        rows.push_str(&format!("<tr><td><a href=\"{}..\">..</a></td><td></td><td></td></tr>\n", escape(path)));
    }
    for l in links {
        // Absolute, so they hold on a subdomain or DNSLink host as on the path gateway.
        let href = format!("{}{}", path, form_urlencoded::byte_serialize(l.name.as_bytes()).collect::<String>().replace('+', "%20"));
        rows.push_str(&format!("<tr><td><a href=\"{href}\">{}</a></td><td>{}{}</a></td><td>{}</td></tr>\n", escape(&l.name), hash_link(origin, &l.cid, &l.name), l.cid, l.tsize));
    }
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{p}</title></head><body>\n<h1>Index of {crumbs}</h1>\n<p>{cid}</p>\n<table>\n<tr><th>name</th><th>CID</th><th>size</th></tr>\n{rows}</table>\n</body></html>\n",
        p = escape(path),
        crumbs = breadcrumbs(origin, content_path)
    )
}

/// A page showing a DAG-CBOR, DAG-JSON, JSON or CBOR block to a person: its value as indented
/// DAG-JSON, each link a link to the gateway's path of that CID.
pub fn block_page(cid: &Cid, bytes: &[u8]) -> String {
    use crate::dag;
    let value = match cid.codec() {
        c if crate::ipld::is_linking(c) => crate::ipld::decode(cid, bytes).ok(),
        dag::CBOR => serde_ipld_dagcbor::from_slice::<ipld_core::ipld::Ipld>(bytes).ok(),
        _ => None,
    };
    let (shown, links) = match &value {
        Some(v) => (crate::ipld::to_pretty_json(v), crate::ipld::links(v)),
        None => match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(v) => (serde_json::to_string_pretty(&v).unwrap_or_default(), Vec::new()),
            Err(_) => (format!("{} bytes that do not decode as this codec", bytes.len()), Vec::new()),
        },
    };
    let links: String = links.iter().map(|l| format!("<li><a href=\"/ipfs/{l}/\">{l}</a></li>\n")).collect();
    let codec = match cid.codec() {
        dag::DAG_CBOR => "dag-cbor",
        dag::DAG_JSON => "dag-json",
        dag::JSON => "json",
        dag::CBOR => "cbor",
        _ => "data",
    };
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{cid}</title></head><body>\n<h1>{cid}</h1>\n<p>A {codec} block of {} bytes. <a href=\"/ipfs/{cid}?format=raw\">Download it</a>.</p>\n<pre>{}</pre>\n<h2>Links</h2>\n<ul>\n{links}</ul>\n</body></html>\n",
        bytes.len(),
        escape(&shown)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types() {
        assert_eq!(content_type("a.css", b""), "text/css; charset=utf-8");
        assert_eq!(content_type("", b"  <!DOCTYPE html><p>"), "text/html; charset=utf-8");
        assert_eq!(content_type("", b"hello"), "text/plain; charset=utf-8");
        assert_eq!(content_type("", b"\x89PNG\r\n\x1a\nxx"), "image/png");
        assert_eq!(content_type("", &[0, 1, 2, 3]), "application/octet-stream");
    }
}
