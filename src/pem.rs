//! PEM text as canopy writes it: 64-column lines, LF, a final newline.

/// Encodes DER as a PEM block with the given tag.
pub fn encode(tag: &str, der: &[u8]) -> String {
    ::pem::encode_config(
        &::pem::Pem::new(tag, der.to_vec()),
        ::pem::EncodeConfig::new().set_line_ending(::pem::LineEnding::LF),
    )
}

/// Whether a PEM file ends with a newline (istiod and many tools need it).
pub fn ends_with_newline(text: &str) -> bool {
    text.ends_with('\n')
}
