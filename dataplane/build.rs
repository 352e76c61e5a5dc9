//! Builds bpf/wirelens.bpf.c into a libbpf-rs skeleton in OUT_DIR, only with
//! feature `xdp` (the default build needs no clang).
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "xdp")]
    {
        let src = "../bpf/wirelens.bpf.c";
        println!("cargo:rerun-if-changed={src}");
        println!("cargo:rerun-if-changed=../bpf/wirelens.h");
        let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
        // Debian keeps asm/types.h under the multiarch include dir, which clang -target bpf misses.
        let var = |k: &str| std::env::var(k).unwrap_or_default();
        let multiarch = format!(
            "/usr/include/{}-{}-{}",
            var("CARGO_CFG_TARGET_ARCH"),
            var("CARGO_CFG_TARGET_OS"),
            var("CARGO_CFG_TARGET_ENV")
        );
        libbpf_cargo::SkeletonBuilder::new()
            .source(src)
            .clang_args(["-I".into(), multiarch, "-Wall".into(), "-Werror".into()])
            .build_and_generate(out.join("wirelens.skel.rs"))
            .expect("building bpf/wirelens.bpf.c (needs clang and libelf-dev: scripts/setup.sh)");
    }
}
