raise RuntimeError("cs_broken_pack refuses to import")
