// rjsf renders the form that specToForm describes; the two templates here
// give it Airbyte's shape: groups, then within each the fields a user must
// fill, then the optional ones folded away until they hold something.

import { useEffect, useMemo, useState, type ReactNode } from "react";
import Form from "@rjsf/core";
import type { MultiSchemaFieldTemplateProps, ObjectFieldTemplateProps, WidgetProps, RJSFValidationError } from "@rjsf/utils";
import validator from "@rjsf/validator-ajv8";
import { fieldErrors, specToForm, type Group, type JsonSchema, type Placement } from "./specToForm";
import type { FieldError } from "../api";

/** What the API shows in place of a saved secret, and takes back to mean "keep it". */
export const MASK = "**********";

type Props = {
  spec: JsonSchema;
  formData: Record<string, unknown>;
  onChange: (data: Record<string, unknown>) => void;
  onSubmit: (data: Record<string, unknown>) => void;
  /** Field errors from the API's problem+json, by `configuration/...` path. */
  serverErrors?: FieldError[];
  children: ReactNode;
};

export function ConnectorForm({ spec, formData, onChange, onSubmit, serverErrors, children }: Props) {
  const { schema, uiSchema, problems } = useMemo(() => specToForm(spec), [spec]);
  const extraErrors = useMemo(() => fieldErrors(serverErrors), [serverErrors]);
  if (problems.length > 0) {
    return (
      <div role="alert" className="error">
        This connector's spec cannot be shown as a form: {problems.join("; ")}
      </div>
    );
  }
  return (
    <Form
      schema={schema}
      uiSchema={uiSchema}
      formData={formData}
      validator={validator}
      onChange={(e) => onChange(e.formData)}
      onSubmit={(e) => onSubmit(e.formData)}
      extraErrors={extraErrors as any}
      showErrorList={false}
      noHtml5Validate
      focusOnFirstError
      transformErrors={friendlier}
      templates={{ ObjectFieldTemplate, MultiSchemaFieldTemplate }}
      widgets={{ secret: SecretWidget }}
    >
      {children}
    </Form>
  );
}

function friendlier(errors: RJSFValidationError[]) {
  return errors.map((e) => (e.name === "required" ? { ...e, message: "is required" } : e));
}

function ObjectFieldTemplate(props: ObjectFieldTemplateProps) {
  const { properties, uiSchema, schema, title, description, fieldPathId, formData, errorSchema } = props;
  const isRoot = fieldPathId.path.length === 0;
  const placement = (name: string): Placement => uiSchema?.[name]?.["ui:placement"] ?? { required: false, alwaysShow: false };
  const visible = properties.filter((p) => !p.hidden);
  const hidden = properties.filter((p) => p.hidden);
  const groups: Group[] = isRoot ? (uiSchema?.["ui:options"]?.groups as Group[] | undefined) ?? [] : [];
  const sections: { id?: string; title?: string; names: typeof visible }[] = [{ names: visible.filter((p) => !placement(p.name).group || !groups.some((g) => g.id === placement(p.name).group)) }];
  for (const g of groups) sections.push({ id: g.id, title: g.title, names: visible.filter((p) => placement(p.name).group === g.id) });

  const holds = (name: string) => {
    const value = (formData as any)?.[name];
    const fallback = (schema.properties as any)?.[name]?.default;
    const set = value !== undefined && value !== "" && JSON.stringify(value) !== JSON.stringify(fallback);
    return set || (errorSchema as any)?.[name] !== undefined;
  };

  const body = sections
    .filter((s) => s.names.length > 0)
    .map((s, i) => {
      const main = s.names.filter((p) => placement(p.name).required || placement(p.name).alwaysShow);
      const optional = s.names.filter((p) => !placement(p.name).required && !placement(p.name).alwaysShow);
      const content = (
        <>
          {main.map((p) => p.content)}
          {optional.length > 0 && (
            <Optional open={optional.some((p) => holds(p.name))} count={optional.length}>
              {optional.map((p) => p.content)}
            </Optional>
          )}
        </>
      );
      return s.title ? (
        <fieldset key={s.id ?? i} className="group">
          <legend>{s.title}</legend>
          {content}
        </fieldset>
      ) : (
        <div key={i}>{content}</div>
      );
    });

  // A oneOf branch shows its fields under the select that chose it: no box, no second title.
  const branch = uiSchema?.["ui:options"]?.branch === true;
  if (branch && visible.length === 0) return <>{hidden.map((p) => p.content)}</>;
  return (
    <fieldset className={isRoot ? "form-root" : branch ? "form-branch" : "form-object"} id={fieldPathId.$id}>
      {!isRoot && !branch && title && <legend>{title}</legend>}
      {!isRoot && !branch && description && <div className="field-description">{description}</div>}
      {body}
      {hidden.map((p) => p.content)}
    </fieldset>
  );
}

/** A `oneOf`: the choice of branch, then the chosen branch's fields. */
function MultiSchemaFieldTemplate({ schema, selector, optionSchemaField }: MultiSchemaFieldTemplateProps) {
  return (
    <div className="one-of">
      {selector && (
        // The field's own label is shown above; this one names the select for assistive technology.
        <label className="one-of-choice">
          <span className="visually-hidden">{schema.title ?? "Choose one"}</span>
          {selector}
        </label>
      )}
      {optionSchemaField}
    </div>
  );
}

function Optional({ open, count, children }: { open: boolean; count: number; children: ReactNode }) {
  const [isOpen, setOpen] = useState(open);
  useEffect(() => {
    if (open) setOpen(true);
  }, [open]);
  return (
    <details className="optional" open={isOpen} onToggle={(e) => setOpen((e.target as HTMLDetailsElement).open)}>
      <summary>Optional fields ({count})</summary>
      {children}
    </details>
  );
}

/** A password input; a saved secret stays masked, locked behind "Edit", until replaced. */
function SecretWidget({ id, value, onChange, onBlur, onFocus, required, disabled, readonly, label }: WidgetProps) {
  const [saved] = useState(value === MASK);
  const [editing, setEditing] = useState(value !== MASK);
  if (!editing) {
    return (
      <div className="secret">
        <input id={id} type="password" value={MASK} readOnly aria-readonly="true" aria-describedby={`${id}-kept`} />
        <span id={`${id}-kept`} className="muted">Saved; kept unless you replace it.</span>
        <button type="button" className="small" aria-label={`Edit ${label}`} onClick={() => (setEditing(true), onChange(undefined))}>
          Edit
        </button>
      </div>
    );
  }
  return (
    <div className="secret">
      <input
        id={id}
        type="password"
        autoComplete="new-password"
        value={value ?? ""}
        required={required}
        disabled={disabled || readonly}
        onChange={(e) => onChange(e.target.value === "" ? undefined : e.target.value)}
        onBlur={(e) => onBlur(id, e.target.value)}
        onFocus={(e) => onFocus(id, e.target.value)}
      />
      {saved && (
        <button type="button" className="small" aria-label={`Keep the saved ${label}`} onClick={() => (setEditing(false), onChange(MASK))}>
          Cancel
        </button>
      )}
    </div>
  );
}
