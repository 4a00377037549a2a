from collections import Counter

from ptmdetox.data import read_corpus, read_task
from ptmdetox.demo import prepare_demo_data


def test_demo_data_is_a_balanced_task_and_a_disjoint_corpus(tmp_path):
    paths = prepare_demo_data(str(tmp_path), train_size=200, test_size=100, aux_size=300)
    train, test = read_task(paths["train"], paths["test"])
    aux = read_corpus(paths["aux"])
    assert (len(train), len(test), len(aux)) == (200, 100, 300)
    counts = Counter(train.labels + test.labels)
    assert counts[0] == counts[1] == 150
    assert not set(aux.texts) & set(train.texts + test.texts) - {""}
    assert all("\t" not in t and "\n" not in t for t in train.texts + aux.texts)
