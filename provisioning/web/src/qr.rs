//! QR codes as inline SVG, made on the box (it may be offline; no image crate, no external service).

use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};

/// An `<svg>` element for `data`, sized by CSS. `None` only if the data is too long for a QR code.
pub fn svg(data: &str) -> Option<String> {
    // Medium error correction: phone cameras read it off a screen at a slant.
    let code = QrCode::with_error_correction_level(data.as_bytes(), EcLevel::M).ok()?;
    let image = code
        .render::<svg::Color>()
        .min_dimensions(240, 240)
        .quiet_zone(true)
        .dark_color(svg::Color("#1b1b1b"))
        .light_color(svg::Color("#ffffff"))
        .build();
    // Inline in HTML: drop the XML declaration, and let the page size it.
    let start = image.find("<svg")?;
    Some(image[start..].replacen(
        "<svg",
        "<svg class=\"qr\" role=\"img\" aria-label=\"QR code of the invite link\"",
        1,
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn makes_inline_svg() {
        let s = super::svg("xmpp:example.test?register;preauth=abc").unwrap();
        assert!(s.starts_with("<svg class=\"qr\""), "{}", &s[..40]);
        assert!(s.ends_with("</svg>"));
    }
}
