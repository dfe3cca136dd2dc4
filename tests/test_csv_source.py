import numpy as np
import pytest

from recsys_ablate.data.csv_source import read_csv
from recsys_ablate.settings import CsvColumns
from recsys_ablate.data.encoded import load_dataset
from recsys_ablate.settings import DataConfig
from recsys_ablate.errors import UserInputError


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_string_ids_and_configurable_columns(tmp_path):
    interactions = write(tmp_path / "i.csv", "who,recipe,when\nalice,r1,100\nbob,r2,200\nalice,r2,300\n")
    items = write(tmp_path / "items.csv", "recipe,name,tags\nr1,Pancakes,Breakfast|Sweet\nr2,Soup,Dinner\n")
    columns = CsvColumns(user="who", item="recipe", timestamp="when", rating=None, item_title="name",
                         item_genres="tags")
    data = read_csv(interactions, items, columns)
    data.validate()
    assert list(data.ratings["timestamp"]) == [100, 200, 300]
    assert np.isnan(data.ratings["user_rating"]).all()
    assert data.genre_names == ("Breakfast", "Dinner", "Sweet")
    encoded = load_dataset(DataConfig(dataset="csv", interactions=interactions, items=items,
                                    csv_columns=columns, datasets_dir=str(tmp_path / "d")),
                           log=lambda *_: None)
    assert list(encoded.user_ids) == ["alice", "bob"]
    assert list(encoded.movie_titles[encoded.movie]) == ["Pancakes", "Soup", "Soup"]
    assert list(encoded.user_ids[encoded.user]) == ["alice", "bob", "alice"]


def test_missing_column_names_file_and_column(tmp_path):
    path = write(tmp_path / "i.csv", "user,item\n1,2\n")
    with pytest.raises(UserInputError, match=r"i.csv: no column 'user_id', 'item_id' \(columns found: user, "
                                             r"item\)"):
        read_csv(path)


def test_empty_value_names_line(tmp_path):
    path = write(tmp_path / "i.csv", "user_id,item_id\n1,2\n,3\n")
    with pytest.raises(UserInputError, match="empty value in column 'user_id' on line 3"):
        read_csv(path)


def test_non_numeric_rating_names_line(tmp_path):
    path = write(tmp_path / "i.csv", "user_id,item_id,rating\n1,2,4\n1,3,great\n")
    with pytest.raises(UserInputError, match="column 'rating' line 3 is 'great'; expected a number"):
        read_csv(path)


def test_item_missing_from_items_file(tmp_path):
    path = write(tmp_path / "i.csv", "user_id,item_id\n1,2\n")
    items = write(tmp_path / "items.csv", "item_id,title\n3,Three\n")
    with pytest.raises(UserInputError, match="item '2' is not in --items"):
        read_csv(path, items)


def test_duplicate_rows_name_both_lines(tmp_path):
    path = write(tmp_path / "i.csv", "user_id,item_id,timestamp\n1,2,10\n1,3,11\n1,2,10\n")
    with pytest.raises(UserInputError, match=r"line 4 repeats line 2 \(same user_id, item_id, timestamp\)"):
        read_csv(path)


def test_the_first_repeated_line_is_named_with_its_own_original(tmp_path):
    path = write(tmp_path / "i.csv", "user_id,item_id\n1,2\n5,6\n5,6\n7,8\n1,2\n")
    with pytest.raises(UserInputError, match=r"line 4 repeats line 3 \(same user_id, item_id\)"):
        read_csv(path)
