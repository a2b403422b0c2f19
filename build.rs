//! Generates the C header from the crate's `#[no_mangle]` items with cbindgen.
//!
//! The header is written to `$OUT_DIR/traceconsistency.h`; the committed copy lives in
//! `include/traceconsistency.h`. `cargo test` (test `header_is_up_to_date`) fails when they
//! differ; `make header` copies the generated one over the committed one.
use std::path::{Path, PathBuf};

fn main() {
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    // cbindgen parses the whole crate: any source change may change the header.
    println!("cargo:rerun-if-changed=rust");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=Cargo.toml");
    println!("cargo:rerun-if-changed=Cargo.lock");
    // The library reports the hash of the sources it was built from (`tc_source_hash`), so
    // scripts/check-prebuilt.sh can tell whether a release's prebuilt library is built from the current sources.
    println!("cargo:rustc-env=TC_SOURCE_HASH={}", source_hash(&crate_dir));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("cbindgen.toml must parse");
    match cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
    {
        Ok(bindings) => {
            bindings.write_to_file(out_dir.join("traceconsistency.h"));
        }
        Err(e) => {
            // A parse error here would also fail the crate build itself; report and go on so
            // rustc shows the real error.
            println!("cargo:warning=cbindgen failed: {e}");
        }
    }
}

/// SHA-256 over the crate's sources, computed so that a shell reproduces it with coreutils
/// (scripts/check-prebuilt.sh):
///
/// ```sh
/// { find rust -type f -name '*.rs'; printf '%s\n' Cargo.toml Cargo.lock build.rs cbindgen.toml; } \
///   | LC_ALL=C sort | xargs -d '\n' sha256sum | sha256sum
/// ```
///
/// i.e. the SHA-256 of the lines `<sha256 of the file>  <path>`, one per file, paths relative
/// to the crate root and sorted bytewise.
fn source_hash(crate_dir: &Path) -> String {
    let mut files: Vec<String> = ["Cargo.toml", "Cargo.lock", "build.rs", "cbindgen.toml"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    collect_rs(crate_dir, "rust", &mut files);
    files.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let mut manifest = Vec::new();
    for f in &files {
        let bytes = std::fs::read(crate_dir.join(f)).unwrap_or_else(|e| panic!("reading {f}: {e}"));
        manifest.extend_from_slice(hex(&sha256(&bytes)).as_bytes());
        manifest.extend_from_slice(b"  ");
        manifest.extend_from_slice(f.as_bytes());
        manifest.push(b'\n');
    }
    hex(&sha256(&manifest))
}

/// Regular files (not symlinks) named `*.rs` under `dir`, recursively, as `/`-joined paths.
fn collect_rs(root: &Path, dir: &str, out: &mut Vec<String>) {
    let entries =
        std::fs::read_dir(root.join(dir)).unwrap_or_else(|e| panic!("reading {dir}: {e}"));
    for entry in entries {
        let entry = entry.expect("directory entry");
        let name = entry
            .file_name()
            .into_string()
            .expect("UTF-8 file name under rust/");
        let path = format!("{dir}/{name}");
        let ty = entry.file_type().expect("file type");
        if ty.is_dir() {
            collect_rs(root, &path, out);
        } else if ty.is_file() && name.ends_with(".rs") {
            out.push(path);
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 (FIPS 180-4); std has none and a build dependency for 40 lines is not worth it.
fn sha256(data: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 32];
    for (i, x) in h.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}
