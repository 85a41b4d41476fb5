//! OCI image writers: reproducible tar layers, config, manifest, index, image layout.
