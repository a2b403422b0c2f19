//! Generates the C header from the crate's `#[no_mangle]` items with cbindgen.
//!
//! The header is written to `$OUT_DIR/traceconsistency.h`; the committed copy lives in
//! `include/traceconsistency.h`. `cargo test` (test `header_is_up_to_date`) fails when they
//! differ; `make header` copies the generated one over the committed one.
use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    // cbindgen parses the whole crate: any source change may change the header.
    println!("cargo:rerun-if-changed=rust");
    println!("cargo:rerun-if-changed=cbindgen.toml");
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
