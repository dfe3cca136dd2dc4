"""Shared fixtures: small generated GroupLens folders in the exact file formats."""

from __future__ import annotations

import os
import signal

import pytest

import recsys_ablate  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from recsys_ablate import heap

# A shell starts a background job (`pytest &`, nohup) with Ctrl-C's SIGINT
# ignored, and every process it starts inherits that, so the tests that send a
# real SIGINT would see it ignored (exit 0 after a full run: seen here). Give
# this process, and through it the commands the tests start, what a
# terminal's foreground job has.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Most tests train with `--workers 2` or start processes of their own: more than 8 test processes at once
# buys nothing, and each holds a TensorFlow (~1 GB).
MAX_TEST_PROCESSES = 8


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto` (pyproject.toml's addopts): one test process per core this process may run on (its CPU
    affinity, which a container's cpuset limits; xdist's own count of the machine's cores does not).
    Not more than one per core: three test processes on two cores spent about a fifth more CPU and
    took longer than two (BENCHMARKS.md, session 26).

    The same count as `training.workers.available_cores`, written again because importing that module
    starts TensorFlow (seconds: BENCHMARKS.md, "Imports kept out of the way") in xdist's controller, which
    otherwise never needs it."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_TEST_PROCESSES))


_LOST_GROUP = pytest.StashKey[str]()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items) -> None:
    """In a test process of `--dist loadgroup`: a test marked `xdist_group` that has lost its group fails
    (pytest-xdist groups by a suffix it adds to the node id; pytest 9.2 ignores it, pytest-dev/
    pytest-xdist#1386). Without its group a module's fixture trains once per test process, and the Ray
    tests start two Rays at once. (Raising here crashed the test process with no word of why.)"""
    if not getattr(config.option, "loadgroup", False):  # set in xdist's test processes only
        return
    for item in items:
        if item.get_closest_marker("xdist_group") and "@" not in item.nodeid:
            item.stash[_LOST_GROUP] = (
                "pytest-xdist did not keep this test in its xdist_group: this pytest breaks --dist loadgroup "
                "(pytest-dev/pytest-xdist#1386); install pytest<9.2 (pip install -e \".[test]\")")


def pytest_collection_finish(session) -> None:
    """The test modules have imported the harness and TensorFlow: frozen out of later collections, as the
    command line does after its imports (`recsys_ablate.heap`; the tests call `main` in this process)."""
    heap.freeze_imports()


def pytest_runtest_setup(item) -> None:
    if _LOST_GROUP in item.stash:
        pytest.fail(item.stash[_LOST_GROUP], pytrace=False)


SHARED = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets"))
SHARED_ML1M = os.path.join(SHARED, "ml-1m-users1-2999")

ML1M_MOVIES = [
    ("1", "Toy Story (1995)", "Animation|Children's|Comedy"),
    ("2", "City of Lost Children, The (Cité des enfants perdus, La) (1995)", "Adventure|Sci-Fi"),
    ("10", "Matrix, The (1999)", "Action|Sci-Fi|Thriller"),
    ("7", "Seven (Se7en) (1995)", "Crime|Thriller"),
    ("3", "Never Rated (1990)", "Drama"),
]
ML1M_USERS = [
    ("1", "F", "1", "10", "48067"),
    ("2", "M", "56", "16", "70072"),
    ("3", "M", "25", "4", "55117"),
    ("9", "F", "35", "0", "02460"),  # a user without ratings
]


def _ml1m_ratings():
    ratings = []
    t = 978300760
    for user in ("1", "2", "3"):
        for i, movie in enumerate(("1", "2", "10", "7")):
            ratings.append((user, movie, str(1 + (int(user) + i) % 5), str(t)))
            t += 37
    return ratings


def write_ml1m(folder, movies=ML1M_MOVIES, users=ML1M_USERS, ratings=None) -> str:
    """Writes movies.dat, users.dat and ratings.dat as in ml-1m.zip."""
    os.makedirs(folder, exist_ok=True)
    ratings = ratings if ratings is not None else _ml1m_ratings()
    for name, rows in (("movies.dat", movies), ("users.dat", users), ("ratings.dat", ratings)):
        with open(os.path.join(folder, name), "w", encoding="iso-8859-1", newline="\n") as f:
            f.writelines("::".join(row) + "\n" for row in rows)
    return str(folder)


_100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                "Romance", "Sci-Fi", "Thriller", "War", "Western"]


def _100k_item(movie_id, title, date, genres):
    flags = ["1" if g in genres else "0" for g in _100K_GENRES]
    return "|".join([movie_id, title, date, "", f"http://us.imdb.com/M/title-exact?{movie_id}"] + flags)


ML100K_ITEMS = [
    _100k_item("1", "Toy Story (1995)", "01-Jan-1995", {"Animation", "Children's", "Comedy"}),
    # Real ML-100k quirk: two movie ids share one title.
    _100k_item("246", "Chasing Amy (1997)", "01-Jan-1997", {"Comedy", "Romance"}),
    _100k_item("268", "Chasing Amy (1997)", "01-Jan-1997", {"Comedy", "Romance"}),
    _100k_item("267", "unknown", "", {"unknown"}),
    _100k_item("1300", "'Til There Was You (1997)", "01-Jan-1997", {"Drama", "Romance"}),
    _100k_item("1500", "Santa with Muscles (1996)", "08-Nov-1996", {"Comedy"}),
    _100k_item("1175", "Hugo Pool (1997)", "01-Jan-1997", {"Romance"}),
    _100k_item("1532", "Ninfa plebea (1996)", "16-Nov-1996", {"Drama"}),
    _100k_item("1664", "8 Heads in a Duffel Bag (1997)", "14-Mar-1997", {"Comedy"}),
    _100k_item("1682", "Scream of Stone (Schrei aus Stein) (1991)", "08-Mar-1996", {"Drama"}),
    _100k_item("1671", "Á köldum klaka (Cold Fever) (1994)", "01-Jan-1994", {"Comedy", "Drama"}),
]
ML100K_USERS = ["1|24|M|technician|85711", "2|53|F|other|94043", "3|17|M|student|32067",
                "4|55|F|salesman|43537"]
ML100K_RATINGS = [
    ("1", "1", "5", "874965758"), ("1", "246", "3", "876893171"), ("2", "268", "4", "888550871"),
    ("2", "1671", "1", "888551015"), ("3", "267", "2", "889237455"), ("3", "1", "4", "889236451"),
    ("4", "1682", "3", "892002352"), ("4", "246", "5", "892003073"),
]


def write_ml100k(folder) -> str:
    """Writes u.data (tabs), u.item and u.user (pipes), ISO-8859-1, as in ml-100k.zip."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "u.item"), "w", encoding="iso-8859-1", newline="\n") as f:
        f.writelines(line + "\n" for line in ML100K_ITEMS)
    with open(os.path.join(folder, "u.user"), "w", encoding="iso-8859-1", newline="\n") as f:
        f.writelines(line + "\n" for line in ML100K_USERS)
    with open(os.path.join(folder, "u.data"), "w", encoding="iso-8859-1", newline="\n") as f:
        f.writelines("\t".join(r) + "\n" for r in ML100K_RATINGS)
    return str(folder)


@pytest.fixture
def ml1m_dir(tmp_path):
    return write_ml1m(tmp_path / "ml-1m")


@pytest.fixture
def ml100k_dir(tmp_path):
    return write_ml100k(tmp_path / "ml-100k")


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory):
    """The embedded demo dataset, encoded (shared by tests that only read it)."""
    from recsys_ablate.data.encoded import load_dataset
    from recsys_ablate.settings import DataConfig

    folder = tmp_path_factory.mktemp("datasets")
    spec = DataConfig(dataset="demo", datasets_dir=str(folder))
    return spec, load_dataset(spec, log=lambda *_: None)


@pytest.fixture(scope="session")
def demo_datasets(demo_data) -> str:
    """A datasets folder holding the demo, generated and encoded once for the session. Tests that only
    train on the demo pass it as --datasets_dir: the encoded cache is keyed by content, so sharing it
    changes no result (a --max_ratings subset is one more cache file, encoded once)."""
    return demo_data[0].datasets_dir


@pytest.fixture(scope="session")
def recipes(tmp_path_factory) -> tuple[dict, str]:
    """The recipes example at its documented size (`generate.write_recipes`, deterministic), written once
    for the session, and a datasets folder for its encoded cache (keyed by content, like `demo_datasets`).

    Returns:
      ({"interactions": path, "items": path, "users": path}, datasets folder).
    """
    from recsys_ablate.data.generate import write_recipes

    folder = tmp_path_factory.mktemp("recipes")
    return write_recipes(str(folder / "files")), str(folder / "datasets")


@pytest.fixture(scope="session")
def recipes_models(tmp_path_factory, worker_id) -> str:
    """A saved-models folder for the recipes example's models, shared by every test process of the session.

    The example end to end and the 2^2 design on it train the same baseline and `ingredients` models (same
    content, settings and seeds: the same identities). Whichever test comes second reloads them, or waits
    on a model's lock while the other process trains it, as two users' runs on one folder do."""
    root = tmp_path_factory.getbasetemp()
    if worker_id != "master":  # under xdist each test process has its own basetemp inside a shared one
        root = root.parent
    folder = root / "recipes_saved_models"
    folder.mkdir(exist_ok=True)
    return str(folder)


def require_shared():
    if not os.path.isdir(SHARED_ML1M):
        pytest.fail(f"integration data missing: {SHARED_ML1M} (../shared/datasets beside the project)")
    return SHARED_ML1M
