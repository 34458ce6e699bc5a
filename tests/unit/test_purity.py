import subprocess
import sys


def test_importing_coloc_core_never_imports_ray_pyarrow_s3fs():
    code = (
        "import sys, pkgutil, importlib, coloc_core\n"
        "for m in pkgutil.iter_modules(coloc_core.__path__):\n"
        "    importlib.import_module('coloc_core.' + m.name)\n"
        "bad = [n for n in ('ray', 'pyarrow', 's3fs', 'boto3') if n in sys.modules]\n"
        "print('loaded', len(list(pkgutil.iter_modules(coloc_core.__path__))))\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.split()[-1]) >= 8
