//! Small, valid sample files made in code, so that no binary blob is committed: a PNG picture,
//! a one-page PDF and an OGG/Opus voice note (one second of silence).
#![allow(dead_code)] // Each test binary includes this module and uses a different part of it.

/// A 2×2 RGB PNG: the signature, IHDR, one IDAT (a zlib stream of one stored block) and IEND.
pub fn png() -> Vec<u8> {
    let (width, height) = (2u32, 2u32);
    let mut pixels = Vec::new();
    for row in 0..height {
        pixels.push(0); // filter: none
        for column in 0..width {
            pixels.extend([200, (row * 100) as u8, (column * 100) as u8]);
        }
    }
    let mut header = Vec::new();
    header.extend(width.to_be_bytes());
    header.extend(height.to_be_bytes());
    header.extend([8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter, no interlace
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(png_chunk(b"IHDR", &header));
    png.extend(png_chunk(b"IDAT", &zlib_stored(&pixels)));
    png.extend(png_chunk(b"IEND", &[]));
    png
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
    chunk.extend(kind);
    chunk.extend(data);
    let crc = crc32_reflected(&chunk[4..]);
    chunk.extend(crc.to_be_bytes());
    chunk
}

/// `data` as a zlib stream of one stored (uncompressed) deflate block.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let length = data.len() as u16;
    let mut stream = vec![0x78, 0x01, 0x01];
    stream.extend(length.to_le_bytes());
    stream.extend((!length).to_le_bytes());
    stream.extend(data);
    let (mut a, mut b) = (1u32, 0u32);
    for byte in data {
        a = (a + u32::from(*byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    stream.extend(((b << 16) | a).to_be_bytes());
    stream
}

/// The CRC-32 of PNG and zlib (reflected polynomial 0xEDB88320).
fn crc32_reflected(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in data {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A one-page PDF saying one line in Helvetica, with a correct cross-reference table.
pub fn pdf() -> Vec<u8> {
    let text = "BT /F1 18 Tf 20 50 Td (Menu: soup 4 EUR, bread 1 EUR) Tj ET";
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 400 100] /Contents 4 0 R \
         /Resources << /Font << /F1 5 0 R >> >> >>"
            .to_owned(),
        format!("<< /Length {} >>\nstream\n{text}\nendstream", text.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_owned(),
    ];
    let mut pdf = String::from("%PDF-1.4\n");
    let mut offsets = Vec::new();
    for (index, object) in objects.iter().enumerate() {
        offsets.push(pdf.len());
        pdf.push_str(&format!("{} 0 obj\n{object}\nendobj\n", index + 1));
    }
    let xref = pdf.len();
    pdf.push_str(&format!(
        "xref\n0 {}\n0000000000 65535 f \n",
        objects.len() + 1
    ));
    for offset in offsets {
        pdf.push_str(&format!("{offset:010} 00000 n \n"));
    }
    pdf.push_str(&format!(
        "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
        objects.len() + 1
    ));
    pdf.into_bytes()
}

/// An OGG/Opus voice note as WhatsApp records them (mono, 48 kHz): the OpusHead and OpusTags
/// pages, then one second of silence in 50 CELT frames of 20 ms.
pub fn ogg_opus() -> Vec<u8> {
    const SERIAL: u32 = 0x5741_4c4c;
    let mut head = b"OpusHead".to_vec();
    head.extend([1, 1]); // version 1, one channel
    head.extend(312u16.to_le_bytes()); // pre-skip
    head.extend(48_000u32.to_le_bytes());
    head.extend([0, 0, 0]); // no gain, mapping family 0
    let vendor = b"local-stack samples";
    let mut tags = b"OpusTags".to_vec();
    tags.extend((vendor.len() as u32).to_le_bytes());
    tags.extend(vendor);
    tags.extend(0u32.to_le_bytes());
    // TOC 0xF8: CELT only, full band, 20 ms, one frame; 0xFF 0xFE decodes as silence.
    let frames: Vec<&[u8]> = vec![&[0xF8, 0xFF, 0xFE]; 50];
    let mut ogg = ogg_page(0x02, 0, SERIAL, 0, &[&head]);
    ogg.extend(ogg_page(0x00, 0, SERIAL, 1, &[&tags]));
    ogg.extend(ogg_page(0x04, 50 * 960, SERIAL, 2, &frames));
    ogg
}

/// One OGG page holding whole `packets` (each under 255 bytes).
fn ogg_page(flags: u8, granule: u64, serial: u32, sequence: u32, packets: &[&[u8]]) -> Vec<u8> {
    let mut page = b"OggS\0".to_vec();
    page.push(flags);
    page.extend(granule.to_le_bytes());
    page.extend(serial.to_le_bytes());
    page.extend(sequence.to_le_bytes());
    page.extend([0; 4]); // the CRC, filled in below
    page.push(packets.len() as u8);
    page.extend(packets.iter().map(|p| p.len() as u8));
    for packet in packets {
        page.extend(*packet);
    }
    let crc = crc32_ogg(&page);
    page[22..26].copy_from_slice(&crc.to_le_bytes());
    page
}

/// OGG's CRC-32: polynomial 0x04C11DB7, not reflected, no final inversion.
fn crc32_ogg(data: &[u8]) -> u32 {
    let mut crc = 0u32;
    for byte in data {
        crc ^= u32::from(*byte) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[test]
fn the_samples_are_well_formed() {
    let png = png();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // The CRC of "IEND" is known.
    assert_eq!(&png[png.len() - 4..], &[0xAE, 0x42, 0x60, 0x82]);
    let pdf = String::from_utf8(pdf()).unwrap();
    let xref: usize = pdf.lines().rev().nth(1).unwrap().parse().unwrap();
    assert!(pdf[xref..].starts_with("xref\n0 6\n"));
    let ogg = ogg_opus();
    assert_eq!(ogg.windows(4).filter(|w| w == b"OggS").count(), 3);
    // The catalogue check value of this CRC (init 0, no final inversion).
    assert_eq!(crc32_ogg(b"123456789"), 0x89A1_897F);
}
