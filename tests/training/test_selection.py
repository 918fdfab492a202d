import pytest

from training.data.selection import Selection, parse_selection


def test_parse_forms():
    assert parse_selection("[libero_10:traj0.9]") == [Selection("libero_10", "traj", 0.9)]
    assert parse_selection("[libero_10:traj-0.1]") == [Selection("libero_10", "traj", -0.1)]
    assert parse_selection("[libero_90:action0.9, libero_10]") == [
        Selection("libero_90", "action", 0.9), Selection("libero_10", "traj", 1.0)]
    assert parse_selection(["[a:traj0.5]", "[b:action]"]) == [Selection("a", "traj", 0.5), Selection("b", "action", 1.0)]


def test_fractions_split_demos():
    first, last = Selection("s", "traj", 0.9), Selection("s", "traj", -0.1)
    assert first.demo_indices(50) == list(range(45))
    assert last.demo_indices(50) == list(range(45, 50))
    assert sorted(first.demo_indices(50) + last.demo_indices(50)) == list(range(50))
    assert Selection("s", "traj", 0.1).demo_indices(3) == [0]  # at least one demo


@pytest.mark.parametrize("bad", ["[libero_10:foo0.9]", "[libero_10:traj1.5]", "[libero_10:traj0]", "[]", "[a:traj0.5"])
def test_bad_strings_name_the_problem(bad):
    with pytest.raises(ValueError, match="selection"):
        parse_selection(bad)
