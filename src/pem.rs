//! PEM text as canopy writes it: 64-column lines, LF, a final newline.

/// Encodes DER as a PEM block with the given tag (the same text as [`encode_secret`],
/// which writes it; public data needs no wiping, so the text is moved out).
pub fn encode(tag: &str, der: &[u8]) -> String {
    std::mem::take(&mut *encode_secret(tag, der))
}

/// Encodes DER (a private key, say) as PEM without leaving a copy of it behind in freed
/// memory: the text is written into one allocation of its final size (a growing `String`
/// would leave its old buffers behind), a line at a time through a buffer that is wiped,
/// and the result wipes itself on drop.
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
    fn encoding_matches_the_pem_crate_in_one_allocation() {
        for n in [0usize, 1, 2, 3, 47, 48, 49, 95, 96, 97, 121, 138, 1218] {
            let der: Vec<u8> = (0..n).map(|i| (i * 7 + 3) as u8).collect();
            let secret = encode_secret("PRIVATE KEY", &der);
            let by_pem_crate = ::pem::encode_config(
                &::pem::Pem::new("PRIVATE KEY", der.clone()),
                ::pem::EncodeConfig::new().set_line_ending(::pem::LineEnding::LF),
            );
            assert_eq!(*secret, by_pem_crate, "length {n}");
            assert_eq!(secret.capacity(), secret.len(), "length {n}");
        }
    }
}
