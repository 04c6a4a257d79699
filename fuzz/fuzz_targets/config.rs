//! Bytes as config text → `jwtgate::Config::parse`. Properties: never panics; errors render;
//! an accepted config holds only normalised path prefixes, issuer indices in range and at
//! least one algorithm per issuer, and its route table compiles.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match jwtgate::Config::parse(Path::new("f.toml"), text) {
        Err(e) => {
            assert!(!e.0.is_empty(), "an error result without errors");
            let _ = e.to_string();
        }
        Ok(c) => {
            for i in &c.issuers {
                assert!(
                    !i.algorithms.is_empty(),
                    "issuer {:?} without algorithms",
                    i.name
                );
            }
            for r in &c.routes {
                assert_eq!(
                    jwtgate::path::normalize(&r.path_prefix).as_deref(),
                    Ok(r.path_prefix.as_str()),
                    "route {:?} has a path_prefix not in normal form",
                    r.name
                );
                assert!(r.issuers.iter().all(|&i| i < c.issuers.len()));
            }
            let _ = jwtgate::routes::RouteTable::new(&c.routes);
        }
    }
});
