//! `slicetrace waterfall` draws one request; headless Chromium renders the SVG, and the
//! screenshot is checked for the slices' colours and the link arrows. The screenshot stays in
//! the target directory for a person to look at.

use std::path::{Path, PathBuf};
use std::process::Command;

const CHROMIUM: &str = "/usr/bin/chromium";

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn rgb(hex: &str) -> [u8; 3] {
    let v = u32::from_str_radix(hex.trim_start_matches('#'), 16).unwrap();
    [(v >> 16) as u8, (v >> 8) as u8, v as u8]
}

/// The fill colour the SVG gives slices named `name`.
fn fill_of(svg: &str, name: &str) -> [u8; 3] {
    let at = svg
        .find(&format!("data-name=\"{name}\""))
        .unwrap_or_else(|| panic!("no {name} slice drawn"));
    let rest = &svg[at..];
    let f = rest.find("fill=\"").unwrap() + 6;
    rgb(&rest[f..f + 7])
}

#[test]
fn a_request_waterfall_renders_in_chromium() {
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let svg_path = out_dir.join("waterfall-3f2a9c0e.svg");
    let png_path = out_dir.join("waterfall-3f2a9c0e.png");
    let o = Command::new(env!("CARGO_BIN_EXE_slicetrace"))
        .args([
            "waterfall",
            data("collector.jsonl").to_str().unwrap(),
            "--rid",
            "3f2a",
            "-o",
            svg_path.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    // A row per thread, across both processes; the other request's slices are not drawn.
    assert!(
        svg.contains(">tokenizer · sglang-tokenizer pid 111<"),
        "{svg}"
    );
    assert!(
        svg.contains(">scheduler [TP 0] · sglang-scheduler pid 222<"),
        "{svg}"
    );
    assert_eq!(
        svg.matches("<rect data-name=").count(),
        6,
        "tokenize, encode, prefill, forward, 2 × decode"
    );
    assert_eq!(
        svg.matches("marker-end=\"url(#arrow)\"").count(),
        3,
        "three links"
    );
    assert!(
        svg.contains("stroke=\"#d62728\""),
        "the errored decode is outlined red"
    );

    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: scripts/test installs Debian's chromium package"
    );
    let profile = out_dir.join("chromium-profile");
    let _ = std::fs::remove_dir_all(&profile);
    let o = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1260,330",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png_path.display()))
        .arg(format!("file://{}", svg_path.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&png_path).unwrap(),
    ));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (1260, 330));
    let channels = info.color_type.samples();
    let count = |c: [u8; 3]| {
        buf[..info.buffer_size()]
            .chunks(channels)
            .filter(|p| p[..3] == c)
            .count()
    };
    // Each slice is drawn as a filled box of its colour; the arrows in dark grey.
    for name in ["tokenize", "encode", "prefill", "forward", "decode"] {
        let n = count(fill_of(&svg, name));
        assert!(
            n > 50,
            "{name}: only {n} pixels of its colour in the screenshot"
        );
    }
    assert!(count([0x33, 0x33, 0x33]) > 20, "no arrow heads drawn");
    let white = count([0xff, 0xff, 0xff]);
    assert!(white < (1260 * 330) * 95 / 100, "the page is almost blank");
    eprintln!("screenshot: {}", png_path.display());
}
