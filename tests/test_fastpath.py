"""Process-level speed settings (ptmdetox.fastpath): what the command adds, and the environment without them."""

from __future__ import annotations

from ptmdetox.fastpath import MALLOC_ENV, SHIM_NAME, fast_environment, installed_environment


def test_the_command_adds_malloc_settings_without_overriding_the_users():
    env = fast_environment({"PATH": "/bin", "MALLOC_TRIM_THRESHOLD_": "5"})
    assert env["MALLOC_MMAP_MAX_"] == MALLOC_ENV["MALLOC_MMAP_MAX_"]
    assert env["MALLOC_TRIM_THRESHOLD_"] == "5" and env["PATH"] == "/bin"
    assert env["PTMDETOX_FAST_ENV"] == "1" and "LD_PRELOAD" not in env     # the MKL shim is opt-in


def test_the_installed_environment_drops_every_setting_of_ours_and_keeps_the_rest():
    ours = fast_environment({"PATH": "/bin", "OMP_NUM_THREADS": "2"})
    ours.update(PTMDETOX_FAST_MKL="1", PTMDETOX_THREADS="4", LD_PRELOAD=f"/usr/lib/libother.so:/cache/{SHIM_NAME}")
    env = installed_environment(ours)
    assert not set(MALLOC_ENV) & set(env)
    assert not {"PTMDETOX_FAST_MKL", "PTMDETOX_FAST_ENV", "PTMDETOX_THREADS"} & set(env)
    assert env["LD_PRELOAD"] == "/usr/lib/libother.so"                       # someone else's preload stays
    assert env["PATH"] == "/bin" and env["OMP_NUM_THREADS"] == "2"
    assert env["PTMDETOX_NO_REEXEC"] == "1"
    assert "LD_PRELOAD" not in installed_environment({"LD_PRELOAD": f"/c/{SHIM_NAME}"})
