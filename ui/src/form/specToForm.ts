// A connector's spec (`connectionSpecification`, JSON Schema with Airbyte's
// keywords) becomes what rjsf renders: the schema it validates against and
// a uiSchema saying how each field shows. Airbyte's web app is the
// reference for every rule here (its schemaToFormBlock and
// useGroupsAndSections): groups in the spec's `groups` order; in a group,
// required fields first, then `order`, then name; `airbyte_hidden` and
// `const` fields not shown; `airbyte_secret` as a password; a `oneOf` as a
// choice between branches told apart by a `const` property they share.

export type JsonSchema = { [key: string]: any };
export type UiSchema = { [key: string]: any };

export type FormSpec = {
  schema: JsonSchema;
  uiSchema: UiSchema;
  /** Problems with the spec itself, each with the path of the schema at fault. */
  problems: string[];
};

/** A group of fields at the top of the form, in the spec's order. */
export type Group = { id: string; title?: string };

/** Where a property shows, for the object template (see ConnectorForm). */
export type Placement = { group?: string; required: boolean; alwaysShow: boolean };

export function specToForm(spec: JsonSchema): FormSpec {
  const problems: string[] = [];
  const schema = structuredClone(spec ?? {});
  // rjsf would show the spec's own title and description above the form.
  delete schema.title;
  delete schema.description;
  if (!schema.type) schema.type = "object";
  const uiSchema = objectUi(schema, "", problems, true);
  const groups: Group[] = Array.isArray(spec?.groups) ? spec.groups.map((g: any) => ({ id: String(g.id), title: g.title })) : [];
  uiSchema["ui:options"] = { ...(uiSchema["ui:options"] ?? {}), groups };
  uiSchema["ui:submitButtonOptions"] = { norender: true };
  return { schema, uiSchema, problems };
}

function objectUi(schema: JsonSchema, path: string, problems: string[], top: boolean): UiSchema {
  const ui: UiSchema = {};
  const properties: Record<string, JsonSchema> = schema.properties ?? {};
  const required = new Set<string>(Array.isArray(schema.required) ? schema.required : []);
  const groupOrder: string[] = Array.isArray(schema.groups) ? schema.groups.map((g: any) => String(g.id)) : [];
  const names = Object.keys(properties);
  const rank = (name: string) => {
    const group = top ? properties[name].group : undefined;
    const g = group === undefined ? -1 : groupOrder.indexOf(group);
    return [g === -1 && group !== undefined ? groupOrder.length : g, required.has(name) ? 0 : 1, typeof properties[name].order === "number" ? properties[name].order : Infinity];
  };
  names.sort((a, b) => {
    const [ra, rb] = [rank(a), rank(b)];
    for (let i = 0; i < ra.length; i++) if (ra[i] !== rb[i]) return ra[i] < rb[i] ? -1 : 1;
    return a.localeCompare(b);
  });
  ui["ui:order"] = [...names, "*"];
  for (const name of names) {
    const property = properties[name];
    const placement: Placement = { group: top ? property.group : undefined, required: required.has(name), alwaysShow: property.always_show === true };
    ui[name] = { ...fieldUi(property, `${path}/${name}`, problems), "ui:placement": placement };
  }
  return ui;
}

function fieldUi(property: JsonSchema, path: string, problems: string[]): UiSchema {
  if (property.airbyte_hidden === true || "const" in property) {
    if ("const" in property && property.default === undefined) property.default = property.const;
    return { "ui:widget": "hidden" };
  }
  const ui: UiSchema = {};
  if (property.examples && !property.description) ui["ui:placeholder"] = String(property.examples[0]);
  if (property.pattern_descriptor) ui["ui:help"] = `Format: ${property.pattern_descriptor}`;
  if (property.airbyte_secret === true) {
    ui["ui:widget"] = "secret";
  } else if (property.multiline === true) {
    ui["ui:widget"] = "textarea";
  }
  if (Array.isArray(property.oneOf) || Array.isArray(property.anyOf)) {
    oneOfUi(property, path, problems, ui);
  } else if (property.type === "object" || (Array.isArray(property.type) && property.type.includes("object"))) {
    Object.assign(ui, objectUi(property, path, problems, false));
  } else if (property.type === "array" && property.items) {
    const items = property.items;
    if (items.type === "object") ui.items = objectUi(items, `${path}/items`, problems, false);
    else if (Array.isArray(items.enum)) ui["ui:widget"] = "checkboxes";
    else ui.items = fieldUi(items, `${path}/items`, problems);
  }
  return ui;
}

/** The property every branch has as a `const`: Airbyte's discriminator. */
export function discriminator(branches: JsonSchema[]): string | undefined {
  const candidates = Object.keys(branches[0]?.properties ?? {}).filter((name) =>
    branches.every((b) => b?.properties?.[name] && "const" in b.properties[name]),
  );
  // A discriminator tells the branches apart: its values differ.
  return candidates.find((name) => new Set(branches.map((b) => JSON.stringify(b.properties[name].const))).size === branches.length) ?? candidates[0];
}

function oneOfUi(property: JsonSchema, path: string, problems: string[], ui: UiSchema) {
  const keyword = Array.isArray(property.oneOf) ? "oneOf" : "anyOf";
  const branches: JsonSchema[] = property[keyword];
  const key = discriminator(branches);
  if (!key) {
    problems.push(`${path}: every ${keyword} branch needs a \`const\` property they share, to tell them apart (Airbyte's oneOfWithoutConst)`);
  }
  // rjsf picks a branch by matching the data; a `const` with its default
  // set makes a chosen branch's data carry its own discriminator.
  branches.forEach((branch, i) => {
    if (!branch.type) branch.type = "object";
    if (!branch.title) branch.title = key ? String(branch.properties[key].const) : `Option ${i + 1}`;
  });
  if (property.type === "object") delete property.type;
  ui[keyword] = branches.map((branch, i) => ({ ...objectUi(branch, `${path}/${keyword}/${i}`, problems, false), "ui:options": { branch: true } }));
  ui["ui:discriminator"] = key;
}

/** A problem+json field path (`configuration/a/b`) as rjsf's extraErrors. */
export function fieldErrors(errors: { field: string; message: string }[] | undefined, prefix = "configuration"): Record<string, any> {
  const out: Record<string, any> = {};
  for (const { field, message } of errors ?? []) {
    if (!field.startsWith(prefix)) continue;
    const parts = field.slice(prefix.length).split(/[/.]/).filter(Boolean).map((p) => p.replace(/~1/g, "/").replace(/~0/g, "~"));
    let node = out;
    for (const part of parts) node = node[part] ??= {};
    (node.__errors ??= []).push(message);
  }
  return out;
}
