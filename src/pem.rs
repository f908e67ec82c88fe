//! PEM text as canopy writes it: 64-column lines, LF, a final newline.

/// Encodes DER as a PEM block with the given tag.
pub fn encode(tag: &str, der: &[u8]) -> String {
    ::pem::encode_config(
        &::pem::Pem::new(tag, der.to_vec()),
        ::pem::EncodeConfig::new().set_line_ending(::pem::LineEnding::LF),
    )
}

/// Encodes secret DER (a private key) as PEM, byte for byte as [`encode`] does, without
/// leaving a copy of the secret behind in freed memory: the text is written into one
/// allocation of its final size (a growing `String` would leave its old buffers behind),
/// a line at a time through a buffer that is wiped, and the result wipes itself on drop.
pub fn encode_secret(tag: &str, der: &[u8]) -> zeroize::Zeroizing<String> {
    use base64::Engine as _;
    const BEGIN: &str = "-----BEGIN ";
    const END: &str = "-----END ";
    const DASHES: &str = "-----\n";
    let body = der.len().div_ceil(3) * 4 + der.len().div_ceil(48);
    let len = BEGIN.len() + END.len() + 2 * (tag.len() + DASHES.len()) + body;
    let mut out = zeroize::Zeroizing::new(String::with_capacity(len));
    out.push_str(BEGIN);
    out.push_str(tag);
    out.push_str(DASHES);
    let mut line = zeroize::Zeroizing::new([0u8; 64]);
    for chunk in der.chunks(48) {
        let n = base64::engine::general_purpose::STANDARD
            .encode_slice(chunk, &mut line[..])
            .expect("48 bytes encode to 64");
        out.push_str(std::str::from_utf8(&line[..n]).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(END);
    out.push_str(tag);
    out.push_str(DASHES);
    debug_assert_eq!(out.len(), len, "one allocation of the final size");
    out
}

/// Whether a PEM file ends with a newline (istiod and many tools need it).
pub fn ends_with_newline(text: &str) -> bool {
    text.ends_with('\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_encoding_is_the_same_text_in_one_allocation() {
        for n in [0usize, 1, 2, 3, 47, 48, 49, 95, 96, 97, 121, 138, 1218] {
            let der: Vec<u8> = (0..n).map(|i| (i * 7 + 3) as u8).collect();
            let secret = encode_secret("PRIVATE KEY", &der);
            assert_eq!(*secret, encode("PRIVATE KEY", &der), "length {n}");
            assert_eq!(secret.capacity(), secret.len(), "length {n}");
        }
    }
}
