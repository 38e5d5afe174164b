"""The compile cache is keyed by configs and code: same key, same directory; any change, a fresh one; 'off' is off.

MindSpore's own check misses shape and package-code changes and matches graphs by compile order
(mindrlhf/utils/compile_cache.py), so the key is what keeps a cached graph from running on the wrong run.
"""

import os

from mindrlhf.utils import compile_cache as cc


def test_directory_follows_the_key(tmp_path, monkeypatch):
    monkeypatch.delenv(cc.ENABLE_ENV, raising=False)
    monkeypatch.delenv(cc.PATH_ENV, raising=False)
    key = {"ppo": {"rollout_batch_size": 16, "max_new_tokens": 64}, "world": 1}
    first = cc.enable_compile_cache(str(tmp_path), key)
    assert os.environ[cc.ENABLE_ENV] == "1" and os.environ[cc.PATH_ENV] == first
    assert os.path.dirname(first) == str(tmp_path) and os.path.isdir(first)
    assert cc.enable_compile_cache(str(tmp_path), dict(reversed(list(key.items())))) == first  # order-free
    batch32 = cc.enable_compile_cache(
        str(tmp_path), {**key, "ppo": {"rollout_batch_size": 32, "max_new_tokens": 64}}
    )
    assert batch32 != first  # a shape change (which MindSpore's own hash misses) gets its own cache
    assert cc.enable_compile_cache(str(tmp_path), {**key, "world": 2}) not in (first, batch32)
    assert cc.use_compile_cache("off", key) is None
    assert cc.ENABLE_ENV not in os.environ and cc.PATH_ENV not in os.environ


def test_key_covers_the_package_source(tmp_path, monkeypatch):
    """An edit of any module (which MindSpore does not see for a package on sys.path) changes the fingerprint,
    and the fingerprint is part of the key."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    (pkg / "notes.txt").write_text("not code")
    before = cc.source_fingerprint(str(pkg))
    (pkg / "notes.txt").write_text("still not code")
    assert cc.source_fingerprint(str(pkg)) == before
    (pkg / "sub" / "b.py").write_text("y = 3\n")
    assert cc.source_fingerprint(str(pkg)) != before
    key = {"a": 1}
    real = cc.cache_key(key)
    assert len(real) == 16 and cc.cache_key(key) == real
    monkeypatch.setattr(cc, "source_fingerprint", lambda: "edited")
    assert cc.cache_key(key) != real
