//! Builds bpf/wirelens.bpf.c and bpf/wirelens_inline.bpf.c into libbpf-rs skeletons in OUT_DIR, only with
//! feature `xdp` (the default build needs no clang).
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "xdp")]
    {
        // Debian keeps asm/types.h under the multiarch include dir, which clang -target bpf misses.
        let var = |k: &str| std::env::var(k).unwrap_or_default();
        let multiarch = format!(
            "/usr/include/{}-{}-{}",
            var("CARGO_CFG_TARGET_ARCH"),
            var("CARGO_CFG_TARGET_OS"),
            var("CARGO_CFG_TARGET_ENV")
        );
        let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
        // The tap program and the inline (bump in the wire) program.
        for (name, header) in [
            ("wirelens", "wirelens"),
            ("wirelens_inline", "wirelens_inline"),
        ] {
            let src = format!("../bpf/{name}.bpf.c");
            println!("cargo:rerun-if-changed={src}");
            println!("cargo:rerun-if-changed=../bpf/{header}.h");
            libbpf_cargo::SkeletonBuilder::new()
                .source(&src)
                .clang_args([
                    "-I".into(),
                    multiarch.clone(),
                    "-Wall".into(),
                    "-Werror".into(),
                ])
                .build_and_generate(out.join(format!("{name}.skel.rs")))
                .unwrap_or_else(|e| {
                    panic!("building {src} (needs clang and libelf-dev: scripts/setup.sh): {e}")
                });
        }
    }
}
