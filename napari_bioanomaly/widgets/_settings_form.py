"""The Train widget's settings form, built from :data:`~..ml.settings.SETTINGS`.

The same table builds the CLI's options (:mod:`..ml.settings`), so a setting added
there appears in both; this module only turns a :class:`Setting` into a Qt field and
reads the fields back.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QWidget,
)

from ..ml.settings import SETTINGS, Setting


def spin(lo: int, hi: int, value: int, step: int = 1) -> QSpinBox:
    """An integer spin box."""
    box = QSpinBox()
    box.setRange(lo, hi)
    box.setSingleStep(step)
    box.setValue(value)
    return box


def field_for(setting: Setting) -> QWidget:
    """The field of one setting, holding its default, with its help as tooltip."""
    value = setting.to_form(setting.default)
    if setting.kind == "int":
        field: Any = spin(int(setting.low), int(setting.high), value, int(setting.step))
    elif setting.kind == "float":
        field = QDoubleSpinBox()
        field.setDecimals(setting.decimals)
        field.setRange(setting.low, setting.high)
        field.setSingleStep(setting.step)
        field.setValue(value)
    elif setting.kind == "choice":
        field = QComboBox()
        field.addItems(list(setting.choices))
        field.setCurrentText(value)
    elif setting.kind == "flag":
        field = QCheckBox(setting.check)
        field.setChecked(bool(value))
    else:
        field = QLineEdit(value)
    if setting.auto:
        field.setSpecialValueText("auto")
    field.setToolTip(setting.help)
    return field


def add_setting_rows(form: QFormLayout) -> dict[str, QWidget]:
    """One row of ``form`` per setting shown in the form (a group shares a row);
    returns the fields by setting name."""
    fields: dict[str, QWidget] = {}
    rows: dict[str, QHBoxLayout] = {}
    for setting in SETTINGS:
        if not setting.form:
            continue
        field = fields[setting.name] = field_for(setting)
        if not setting.group:
            form.addRow(setting.label, field)
        elif setting.group in rows:
            rows[setting.group].addWidget(QLabel(setting.label))
            rows[setting.group].addWidget(field)
        else:
            row = rows[setting.group] = QHBoxLayout()
            row.setContentsMargins(0, 0, 0, 0)
            row.addWidget(field)
            box = QWidget()
            box.setLayout(row)
            form.addRow(setting.label, box)
    return fields


def field_values(fields: dict[str, QWidget]) -> dict[str, Any]:
    """What the fields hold, by setting name."""
    out: dict[str, Any] = {}
    for name, field in fields.items():
        if isinstance(field, QCheckBox):
            out[name] = field.isChecked()
        elif isinstance(field, QComboBox):
            out[name] = field.currentText()
        elif isinstance(field, QLineEdit):
            out[name] = field.text()
        else:
            out[name] = field.value()
    return out


def set_field_values(fields: dict[str, QWidget], values: dict[str, Any]) -> None:
    """Put ``values`` (by setting name, as :func:`field_values` gives them) in the fields."""
    for name, value in values.items():
        field: Any = fields.get(name)
        if isinstance(field, QCheckBox):
            field.setChecked(bool(value))
        elif isinstance(field, QComboBox):
            field.setCurrentText(str(value))
        elif isinstance(field, QLineEdit):
            field.setText(str(value))
        elif field is not None:
            field.setValue(value)
