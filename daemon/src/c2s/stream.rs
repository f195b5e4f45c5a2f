//! Writing the stream layer: headers, features and stream errors (RFC 6120 §4).

use crate::xml::{escape_attr, ns};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Our stream header in reply to a client's.
pub fn header(domain: &str, id: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}' id='{}' from='{}' version='1.0' xml:lang='en'>",
        ns::CLIENT,
        ns::STREAMS,
        escape_attr(id),
        escape_attr(domain)
    )
}

/// A stream error followed by the stream close (RFC 6120 §4.9).
pub fn error(condition: &str, text: Option<&str>) -> String {
    let text = text
        .map(|t| {
            format!(
                "<text xmlns='{}' xml:lang='en'>{}</text>",
                ns::STREAM_ERRORS,
                crate::xml::escape_text(t)
            )
        })
        .unwrap_or_default();
    format!(
        "<stream:error><{condition} xmlns='{}'/>{text}</stream:error></stream:stream>",
        ns::STREAM_ERRORS
    )
}

/// Writes and flushes; errors mean the peer is gone, which the caller handles by closing.
pub async fn send<W: AsyncWrite + Unpin + ?Sized>(w: &mut W, data: &str) -> std::io::Result<()> {
    w.write_all(data.as_bytes()).await?;
    w.flush().await
}

/// Sends a stream error (with a header first if none was sent) and shuts the writer down.
pub async fn fail<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    header_sent: Option<(&str, &str)>,
    condition: &str,
    text: Option<&str>,
) {
    let mut out = String::new();
    if let Some((domain, id)) = header_sent {
        out.push_str(&header(domain, id));
    }
    out.push_str(&error(condition, text));
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let _ = send(w, &out).await;
        let _ = w.shutdown().await;
    })
    .await;
}

/// What a client's stream header must say (RFC 6120 §4.7): a `to` naming us and version 1.0.
pub fn check_header(h: &crate::xml::Element, domain: &str) -> Result<(), (&'static str, String)> {
    if h.attr("xmlns").is_some_and(|d| d != ns::CLIENT) {
        return Err(("invalid-namespace", "this port speaks jabber:client".into()));
    }
    match h.attr("to") {
        Some(to) if to.eq_ignore_ascii_case(domain) => {}
        Some(to) => {
            return Err((
                "host-unknown",
                format!("this server serves {domain}, not {to}"),
            ))
        }
        None => {
            return Err((
                "host-unknown",
                format!("say to='{domain}' in the stream header"),
            ))
        }
    }
    match h.attr("version") {
        Some(v)
            if v.split('.')
                .next()
                .and_then(|m| m.parse::<u32>().ok())
                .unwrap_or(0)
                >= 1 =>
        {
            Ok(())
        }
        _ => Err(("unsupported-version", "XMPP 1.0 is required".into())),
    }
}
